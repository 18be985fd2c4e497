"""Simulcast in SDP: the a=rid (RFC 8851) and a=simulcast (RFC 8853) lines of a client's m-line.

A publisher offers its layers as ``a=rid:<id> send [restrictions]`` lines and one
``a=simulcast:send <layers>`` line, in either order; the server answers ``a=rid:<id> recv`` and
``a=simulcast:recv <layers>`` for those it takes, and the RTP of each layer carries its rid in
the header extensions of RFC 8852. The server receives simulcast and never sends it.

What the server takes (``receivable``), and why:

* video m-lines only: no browser sends audio simulcast, and an answerer declines simulcast by
  leaving it out of its answer (RFC 8853 §5.3.2), so such an offer still works as one stream;
* the first alternative of each layer (``a,b``: ``a``), in the offer's order, paused (``~``) or
  not; the offerer then sends that one (RFC 8853 §5.3.2 lets the answerer remove rids);
* only if the m-line offers the rid header extension (RFC 8852): without it a layer's packets
  cannot be told apart, and guessing a layer from the order of ``a=ssrc`` lines is unsafe;
* a layer whose ``pt=`` restriction leaves no payload type the server answered is left out.

A ``recv`` direction in a client's a=simulcast asks the server to send simulcast: it is declined
the same way (left out of the answer), not refused.

:func:`check_section` refuses what cannot be meant: malformed lines, a rid named twice, a layer
with no matching ``a=rid`` line, more than :data:`MAX_LAYERS` layers.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

from sfu.media.candidate import InvalidValue, number, show
from sfu.media.params import URI_REPAIRED_RID, URI_RID

#: A rid is at most 16 characters: the W3C API refuses longer ones (RTCRtpEncodingParameters.rid),
#: and the one-byte header extension that carries it holds 16 bytes (RFC 8285 §4.2).
MAX_RID_LENGTH = 16
#: Layers the server takes on one m-line. Browsers and libwebrtc send 2 or 3; each layer costs
#: the server a stream's worth of state (sequence check, history, statistics), so a client
#: cannot make it keep more than this per track.
MAX_LAYERS = 4
RID_EXTENSIONS = (URI_RID, URI_REPAIRED_RID)

_RID = re.compile(r"[A-Za-z0-9_-]+")  # RFC 8851 §10: rid-id
_PARAM_NAME = re.compile(r"[A-Za-z0-9-]+")
_INTEGER_PARAMS = frozenset({"max-width", "max-height", "max-fs", "max-br", "max-pps"})
_DECIMAL_PARAMS = frozenset({"max-fps", "max-bpp"})
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True, slots=True)
class Rid:
    """One a=rid line."""

    id: str
    direction: str  # "send" or "recv"
    payload_types: tuple[int, ...] = ()  # its pt= restriction; empty: any of the m-line's


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer the server receives: its rid, whether the sender has paused it (``~``), and
    the payload types its a=rid line allows (empty: any)."""

    rid: str
    paused: bool = False
    payload_types: tuple[int, ...] = ()


#: an a=simulcast stream list: layers, each a list of alternatives, each (rid, paused)
StreamList = tuple[tuple[tuple[str, bool], ...], ...]


@dataclass(frozen=True, slots=True)
class Simulcast:
    """One a=simulcast line."""

    send: StreamList = ()
    recv: StreamList = ()


def check_rid_id(text: str) -> str:
    if not _RID.fullmatch(text) or len(text) > MAX_RID_LENGTH:
        raise InvalidValue(
            f"rid {show(text)} must be 1-{MAX_RID_LENGTH} characters from A-Z a-z 0-9 - _ "
            f"(RFC 8851 §10; {MAX_RID_LENGTH} is the WebRTC API's limit)"
        )
    return text


def parse_rid(value: str) -> Rid:
    """``<id> send|recv [pt=<pt>,...][;<restriction>[=<value>]]...`` (RFC 8851 §10)."""
    rid_id, _, rest = value.partition(" ")
    check_rid_id(rid_id)
    direction, _, params = rest.partition(" ")
    if direction not in ("send", "recv"):
        raise InvalidValue(f"direction {show(direction)} must be send or recv (RFC 8851 §10)")
    payload_types: tuple[int, ...] = ()
    for index, param in enumerate(params.split(";") if params else ()):
        name, equals, text = param.partition("=")
        if name == "pt" and index == 0:
            payload_types = tuple(number(pt, "payload type", 0, 127) for pt in text.split(","))
        elif not _PARAM_NAME.fullmatch(name) or name == "pt":
            raise InvalidValue(
                f"restriction {show(param)} is not <name>[=<value>] (pt= only first)"
            )
        elif name in _INTEGER_PARAMS and equals:
            number(text, name, 0, 2**32 - 1)
        elif name in _DECIMAL_PARAMS and equals and not _DECIMAL.fullmatch(text):
            raise InvalidValue(f"{name} {show(text)} is not a decimal number")
    return Rid(rid_id, direction, payload_types)


def parse_simulcast(value: str) -> Simulcast:
    """``send|recv <layers> [recv|send <layers>]`` (RFC 8853 §5.1): layers split by ';', the
    alternatives of a layer by ',', a paused one marked '~'."""
    parts = value.split(" ")
    if len(parts) not in (2, 4) or "" in parts:
        hint = " (the draft form 'rid=' is not supported)" if "rid=" in value else ""
        raise InvalidValue(
            "expected send|recv <rid>[;<rid>...] [recv|send <rid>[;<rid>...]] (RFC 8853 §5.1)"
            + hint
        )
    lists: dict[str, StreamList] = {}
    for direction, text in zip(parts[::2], parts[1::2], strict=True):
        if direction not in ("send", "recv") or direction in lists:
            raise InvalidValue(f"direction {show(direction)} must be send or recv, each once")
        lists[direction] = tuple(
            tuple(
                (check_rid_id(rid.removeprefix("~")), rid.startswith("~"))
                for rid in layer.split(",")
            )
            for layer in text.split(";")
        )
    return Simulcast(lists.get("send", ()), lists.get("recv", ()))


def check_section(attributes: Sequence[tuple[str, str | None]], formats: Collection[str]) -> None:
    """Raise InvalidValue if the a=rid and a=simulcast lines of one m-line do not fit together.

    Each line's own syntax was checked already (``parse_rid``, ``parse_simulcast``); ``formats``
    are the payload types on the m= line.
    """
    rids: dict[str, Rid] = {}
    lines: list[Simulcast] = []
    for key, value in attributes:
        if key == "rid" and value is not None:
            rid = parse_rid(value)
            if rid.id in rids:
                raise InvalidValue(
                    f"rid {show(rid.id)} has two a=rid lines; a rid names one stream of its "
                    "m-line (RFC 8851 §4)"
                )
            missing = [pt for pt in rid.payload_types if str(pt) not in formats]
            if missing:
                raise InvalidValue(
                    f"a=rid:{rid.id} allows payload type {missing[0]}, which is not on the m= "
                    "line (RFC 8851 §4)"
                )
            rids[rid.id] = rid
        elif key == "simulcast" and value is not None:
            lines.append(parse_simulcast(value))
    if len(lines) > 1:
        raise InvalidValue("more than one a=simulcast line (RFC 8853 §5.1 allows one)")
    if not lines:
        return
    named: set[str] = set()
    for direction, stream_list in (("send", lines[0].send), ("recv", lines[0].recv)):
        for layer in stream_list:
            for rid_id, _paused in layer:
                if rid_id in named:
                    raise InvalidValue(f"a=simulcast names rid {show(rid_id)} twice")
                named.add(rid_id)
                declared = rids.get(rid_id)
                if declared is None or declared.direction != direction:
                    raise InvalidValue(
                        f"a=simulcast:{direction} names rid {show(rid_id)}, which has no "
                        f"a=rid:{rid_id} {direction} line (RFC 8853 §5.1)"
                    )
    if len(lines[0].send) > MAX_LAYERS:
        raise InvalidValue(
            f"a=simulcast:send has {len(lines[0].send)} layers; the server takes at most "
            f"{MAX_LAYERS} per m-line"
        )


# --- what the server receives ---


@dataclass(frozen=True, slots=True)
class MLine:
    """What one audio/video m-line of a client's offer or answer says of simulcast."""

    mid: str
    sending: bool  # port not 0 (or a=bundle-only), direction sendonly or sendrecv
    layers: tuple[Layer, ...]  # what the server can receive; empty: one stream, no simulcast
    extensions: Mapping[str, int]  # rid and repaired-rid header-extension ids it offers

    @property
    def rids(self) -> tuple[str, ...]:
        return tuple(layer.rid for layer in self.layers)


def receivable(sdp: str) -> dict[str, MLine]:
    """By mid, the simulcast the server receives on each audio/video m-line of ``sdp``, an SDP
    that ``sfu.media.sdp_check`` accepted (see the module's docstring for what is taken)."""
    result = {}
    for kind, port, attributes in _sections(sdp):
        values = dict(attributes)
        mid = values.get("mid")
        if kind not in ("audio", "video") or mid is None:
            continue
        direction = next((k for k, _ in attributes if k in _DIRECTIONS), "sendrecv")
        # port 0 with a=bundle-only is not a rejected m-line: it is carried only by the
        # BUNDLE transport (RFC 8843 §6); Firefox offers every m-line after the first so
        used = port != 0 or "bundle-only" in values
        extensions: dict[str, int] = {}
        for key, value in attributes:
            if key == "extmap" and value is not None:
                ext_id, _, uri = value.partition(" ")
                if uri in RID_EXTENSIONS:
                    extensions.setdefault(uri, int(ext_id.partition("/")[0]))
        layers: tuple[Layer, ...] = ()
        simulcast = values.get("simulcast")
        if kind == "video" and used and simulcast is not None and URI_RID in extensions:
            rids = {
                rid.id: rid
                for key, value in attributes
                if key == "rid" and value is not None
                for rid in (parse_rid(value),)
            }
            layers = tuple(
                Layer(rid, paused, rids[rid].payload_types)
                for (rid, paused), *_alternatives in parse_simulcast(simulcast).send
            )
        result[mid] = MLine(
            mid,
            used and direction in ("sendonly", "sendrecv"),
            layers,
            extensions if layers else {},
        )
    return result


def _sections(sdp: str) -> Iterator[tuple[str, int, list[tuple[str, str | None]]]]:
    """Each m-section's media type, port and attributes (name, value or None)."""
    section: tuple[str, int, list[tuple[str, str | None]]] | None = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            if section is not None:
                yield section
            kind, port, *_ = line[2:].split(" ")
            section = (kind, int(port), [])
        elif line.startswith("a=") and section is not None:
            name, colon, value = line[2:].partition(":")
            section[2].append((name, value if colon else None))
    if section is not None:
        yield section


def answer_lines(layers: Sequence[Layer]) -> list[str]:
    """The lines that take ``layers`` (RFC 8851 §6.2.2, RFC 8853 §5.3.2): the offer's
    directions reversed, the layers in its order, paused ones still marked."""
    if not layers:
        return []
    listed = ";".join(("~" if layer.paused else "") + layer.rid for layer in layers)
    return [f"a=rid:{layer.rid} recv" for layer in layers] + [f"a=simulcast:recv {listed}"]


def with_layers(sdp: str, layers: Mapping[str, Sequence[Layer]]) -> str:
    """``sdp`` (one the server wrote) with :func:`answer_lines` at the end of each m-section
    whose mid has layers; aiortc writes no rid or simulcast line of its own."""
    if not any(layers.values()):
        return sdp
    out: list[str] = []
    pending: list[str] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            out += pending
            pending = []
        elif line.startswith("a=mid:"):
            pending = answer_lines(layers.get(line[len("a=mid:") :], ()))
        out.append(line)
    out += pending
    return "\r\n".join(out) + "\r\n"
