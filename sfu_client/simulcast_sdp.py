"""SDP of one m-line that sends rid simulcast, as Chromium writes it (no I/O, strings in and out).

- RFC 8851: ``a=rid:<id> send`` names each encoding; RFC 8853: ``a=simulcast:send q;h;f`` lists
  them (the order is the page's, here the caller's: it says nothing about their sizes).
- RFC 8852: the rtp-stream-id and repaired-rtp-stream-id header extensions carry the rid in the
  packets, since the offer lists no a=ssrc for the m-line (the answerer learns the SSRCs).
- RFC 8285: an extension id names one URI on the whole BUNDLE transport.

aiortc writes none of this and drops it when parsing, so the client edits the SDP text it sends
and reads the server's answer text itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sfu.media.params import URI_ABS_SEND_TIME, URI_MID, URI_REPAIRED_RID, URI_RID

#: RFC 8851 §10 rid-syntax (alphanumerics, "-", "_"); at most 16 bytes so that the RFC 8852
#: extension element fits the one-byte header form (RFC 8285 §4.2) like the others.
RID = re.compile(r"[A-Za-z0-9_-]{1,16}")
SIMULCAST_EXTENSIONS = (URI_RID, URI_REPAIRED_RID)
_EXTMAP = re.compile(r"a=extmap:(\d+)(?:/\w+)? (\S+)")
_RTPMAP = re.compile(r"a=rtpmap:(\d+) ([^/\s]+)/(\d+)")
_APT = re.compile(r"a=fmtp:(\d+) (?:.*;\s*)?apt=(\d+)")


def check_rids(rids: Sequence[str]) -> None:
    """Raise ValueError unless ``rids`` are distinct valid rid names (at least one)."""
    if not rids:
        raise ValueError("simulcast needs at least one layer")
    for rid in rids:
        if not RID.fullmatch(rid):
            raise ValueError(f"rid {rid!r} must be 1-16 letters, digits, '-' or '_' (RFC 8851)")
    if len(set(rids)) != len(rids):
        raise ValueError(f"rids must be distinct, got {list(rids)}")


# --- sections ---


def _sections(sdp: str) -> list[list[str]]:
    """The session section, then one list of lines per m-line."""
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        if line:
            sections[-1].append(line)
    return sections


def _join(sections: Iterable[list[str]]) -> str:
    return "".join(line + "\r\n" for section in sections for line in section)


def _section_index(sections: Sequence[list[str]], mid: str) -> int:
    for index, section in enumerate(sections[1:], 1):
        if f"a=mid:{mid}" in section:
            return index
    raise ValueError(f"the SDP has no m-line with mid {mid!r}")


def extension_ids(sdp: str) -> dict[str, int]:
    """URI -> id of every a=extmap in ``sdp`` (the first id seen for a URI)."""
    found: dict[str, int] = {}
    for line in sdp.splitlines():
        match = _EXTMAP.fullmatch(line.strip())
        if match:
            found.setdefault(match.group(2), int(match.group(1)))
    return found


def choose_extension_ids(sdp: str, kept: Mapping[str, int] | None = None) -> dict[str, int]:
    """Ids for the rid and repaired-rid extensions on this transport.

    An id already chosen (``kept``, from an earlier offer) stays (RFC 8285 §6: ids do not change
    in a session); else the id another m-line of ``sdp`` uses for the URI; else the lowest id no
    extension of ``sdp`` uses. Raises ValueError if ``kept`` now collides with another URI.
    """
    used = extension_ids(sdp)
    taken = {ext_id: uri for uri, ext_id in used.items()}
    chosen: dict[str, int] = {}
    for uri in SIMULCAST_EXTENSIONS:
        ext_id = (kept or {}).get(uri) or used.get(uri)
        if ext_id is None:
            free = [i for i in range(1, 15) if i not in taken]
            if not free:
                raise ValueError("no free one-byte header extension id left for simulcast")
            ext_id = free[0]
        elif taken.get(ext_id, uri) != uri:
            raise ValueError(f"extension id {ext_id} of {uri} is taken by {taken[ext_id]}")
        taken[ext_id] = uri
        chosen[uri] = ext_id
    return chosen


def _without_simulcast(section: list[str]) -> list[str]:
    """The section without source (RFC 5576) and rid/simulcast lines."""
    dropped = ("a=ssrc:", "a=ssrc-group:", "a=rid:", "a=simulcast:")
    return [line for line in section if not line.startswith(dropped)]


def _with_lines(
    section: list[str], extensions: Mapping[str, int], rids: Sequence[str], direction: str
) -> list[str]:
    """``section`` with the extmap lines it lacks after its last one, and rid lines at its end."""
    present = {m.group(2) for m in map(_EXTMAP.fullmatch, section) if m}
    extmaps = [f"a=extmap:{i} {uri}" for uri, i in extensions.items() if uri not in present]
    last = max((i for i, line in enumerate(section) if line.startswith("a=extmap:")), default=None)
    if last is None:
        last = next(i for i, line in enumerate(section) if line.startswith("a=mid:"))
    lines = section[: last + 1] + extmaps + section[last + 1 :]
    lines += [f"a=rid:{rid} {direction}" for rid in rids]
    lines.append(f"a=simulcast:{direction} {';'.join(rids)}")
    return lines


# --- the client's offer and answer ---


def simulcast_offer(sdp: str, mid: str, rids: Sequence[str], extensions: Mapping[str, int]) -> str:
    """``sdp`` with the m-line ``mid`` offering ``rids`` (from :func:`choose_extension_ids`).

    Its a=ssrc and a=ssrc-group lines go: the layers' SSRCs are learnt from the packets, as
    with Chromium, which lists none for a simulcast m-line.
    """
    check_rids(rids)
    sections = _sections(sdp)
    index = _section_index(sections, mid)
    section = _without_simulcast(sections[index])
    if any(line in ("a=inactive", "a=recvonly") for line in section):
        sections[index] = section  # not sending: no layers to describe
    else:
        sections[index] = _with_lines(section, extensions, rids, "send")
    return _join(sections)


def simulcast_answer(answer: str, offer: str, mid: str, rids: Sequence[str]) -> str:
    """Our ``answer`` to a remote ``offer`` (a server's renegotiation), for the m-line ``mid``.

    The a=ssrc lines go as in our offers; the rids the offer still receives (its
    ``a=simulcast:recv``) are answered ``send`` with the extensions the offer lists (an answer
    may not add any, RFC 8285 §6). Without ``a=simulcast`` in the offer, none are.
    """
    offered = parse_simulcast(offer, mid, "recv", rids)
    sections = _sections(answer)
    index = _section_index(sections, mid)
    section = _without_simulcast(sections[index])
    if offered.rids and "a=sendonly" in section:
        extensions = {u: i for u, i in offered.extensions.items() if u in SIMULCAST_EXTENSIONS}
        section = _with_lines(section, extensions, offered.rids, "send")
    sections[index] = section
    return _join(sections)


# --- the server's answer ---


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What the remote description says of one simulcast m-line."""

    #: our rids the remote agreed to receive, in our order; () = no simulcast: send one stream
    rids: tuple[str, ...] = ()
    #: those it lists paused ("~", RFC 8853 §5.1): negotiated, but not to be sent for now
    paused: frozenset[str] = frozenset()
    extensions: Mapping[str, int] = field(default_factory=dict)  # URI -> id
    payload_types: Mapping[str, int] = field(default_factory=dict)  # lower-case codec -> PT
    rtx_payload_types: Mapping[int, int] = field(default_factory=dict)  # media PT -> RTX PT


def parse_simulcast(sdp: str, mid: str, direction: str, ours: Sequence[str]) -> Negotiated:
    """Read the m-line ``mid`` of a remote description: its ``a=simulcast:<direction>`` rids
    that are among ``ours`` (RFC 8853 §5.3: the answer may remove streams, never add), codecs
    and extension ids.

    The rids count only if the remote also negotiated the rid extension: without it the
    layers could not be told apart.
    """
    section = _sections(sdp)[_section_index(_sections(sdp), mid)]
    extensions = {m.group(2): int(m.group(1)) for m in map(_EXTMAP.fullmatch, section) if m}
    payload_types: dict[str, int] = {}
    rtx_of: dict[int, int] = {}
    rid_lines: set[str] = set()
    listed: list[str] = []
    paused: set[str] = set()
    for line in section:
        if match := _RTPMAP.fullmatch(line):
            payload_types.setdefault(match.group(2).lower(), int(match.group(1)))
        elif match := _APT.match(line):
            rtx_of[int(match.group(2))] = int(match.group(1))
        elif line.startswith("a=rid:"):
            rid, _, rest = line[6:].partition(" ")
            if rest.split(" ", 1)[0] == direction:
                rid_lines.add(rid)
        elif line.startswith("a=simulcast:"):
            listed, paused = _simulcast_streams(line[12:], direction)
    accepted = [rid for rid in ours if rid in listed and rid in rid_lines]
    if URI_RID not in extensions:
        accepted = []
    return Negotiated(
        rids=tuple(accepted),
        paused=frozenset(paused & set(accepted)),
        extensions=extensions,
        payload_types=payload_types,
        rtx_payload_types={pt: rtx for pt, rtx in rtx_of.items() if pt in payload_types.values()},
    )


def _simulcast_streams(value: str, direction: str) -> tuple[list[str], set[str]]:
    """RFC 8853 §5.1: ``send <list>`` and/or ``recv <list>``; a list is streams separated by
    ";", each a "," list of alternative rids, "~" marking a paused one. Returns the rids of
    ``direction`` (each stream's alternatives in order) and the paused ones."""
    words = value.split()
    rids: list[str] = []
    paused: set[str] = set()
    for word_direction, streams in zip(words[::2], words[1::2], strict=False):
        if word_direction != direction:
            continue
        for alternatives in streams.split(";"):
            for rid in alternatives.split(","):
                name = rid.removeprefix("~")
                rids.append(name)
                if rid.startswith("~"):
                    paused.add(name)
    return rids, paused


def header_extension_ids(negotiated: Negotiated) -> dict[str, int]:
    """The ids of the extensions a simulcast sender writes, for those negotiated."""
    wanted = (URI_MID, URI_RID, URI_REPAIRED_RID, URI_ABS_SEND_TIME)
    return {uri: negotiated.extensions[uri] for uri in wanted if uri in negotiated.extensions}
