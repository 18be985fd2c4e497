"""Checks that a client's SDP offer or answer can work, before any of it is applied.

aiortc's parser takes much that cannot work -- no ``a=fingerprint``, port 99999999999, transport
``FOO/BAR`` -- and answers it; on other mistakes it raises KeyError or AssertionError halfway
through applying the description. :func:`check_description` reads the whole SDP first and turns the
first problem into one sentence for the client's author that says where it is, e.g.
``m=video section 2 (mid 1): port 99999999999 is out of range 0-65535`` (sections count from 1).

Rules: SDP (RFC 8866), JSEP (RFC 8829), BUNDLE (RFC 8843), ICE (RFC 8839), DTLS (RFC 4145,
RFC 8122, RFC 8842), rtcp-mux (RFC 5761), header extensions (RFC 8285), source attributes
(RFC 5576), rid and simulcast (RFC 8851, RFC 8853); and every line aiortc reads must have the
shape it expects. The server has one transport per participant, so every m-line in use must be
bundled onto it. The work is linear in the size of the SDP, so a hostile one costs no more than
its bytes.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from sfu.media.candidate import InvalidValue, number, show
from sfu.media.sdp_attributes import (
    CONNECTION,
    FINGERPRINT_BYTES,
    MEDIA_CHECKS,
    SESSION_CHECKS,
    TOKEN,
    InvalidSdp,
    NoFormats,
    run,
)
from sfu.media.sdp_simulcast import check_section as check_simulcast

#: audio/video transports a JSEP answerer accepts (RFC 8829 §5.1); all are DTLS-SRTP here
RTP_PROFILES = frozenset(
    f"{prefix}RTP/{profile}"
    for prefix in ("", "UDP/TLS/", "TCP/DTLS/", "TCP/TLS/")
    for profile in ("SAVP", "SAVPF")
)
SCTP_PROFILES = frozenset({"UDP/DTLS/SCTP", "TCP/DTLS/SCTP", "DTLS/SCTP"})
SESSION_LINES = frozenset("vosiuepcbtrzkam")
MEDIA_LINES = frozenset("icbka")
MAX_MID_LENGTH = 64  # what the protocol's sdpMid and `tracks` keys allow
#: session-level attributes that hold for every m-line (the transport's)
_INHERITED = frozenset({"ice-ufrag", "ice-pwd", "fingerprint", "setup"})
# controls, and what str.splitlines() (which aiortc uses) also takes for a line break
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x85\u2028\u2029]|\r(?!\n)")

Kind = Literal["offer", "answer"]
#: kind -> (codec name, clock rate) the server can receive and send
Codecs = Mapping[str, Collection[tuple[str, int]]]


__all__ = ["Codecs", "InvalidSdp", "Kind", "check_description", "mids"]


@dataclass
class _Section:
    number: int  # from 1
    kind: str
    port_text: str
    proto: str
    formats: list[str]
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)
    # filled in by _check_section
    port: int = 0
    payload_types: frozenset[str] = frozenset()
    mapped: frozenset[str] = frozenset()  # payload types with an a=rtpmap

    def values(self, name: str) -> list[str | None]:
        return [value for key, value in self.attributes if key == name]

    @cached_property  # read once all attributes are in
    def mid(self) -> str | None:
        mids = self.values("mid")
        return mids[0] if mids else None

    def where(self) -> str:
        mid = f" (mid {self.mid})" if self.mid else ""
        return f"m={self.kind} section {self.number}{mid}"


def check_description(sdp: str, kind: Kind, codecs: Codecs | None = None) -> None:
    """Raise InvalidSdp naming the first problem that keeps ``sdp`` from working.

    ``codecs``, when given, are what the server supports: each audio/video m-line must have one.
    """
    lines = _lines(sdp)
    if not lines or lines[0] != ("v", "0"):
        raise InvalidSdp("an SDP must start with the line v=0 (RFC 8866 §5.1)")
    if any(key == "v" for key, _ in lines[1:]):
        raise InvalidSdp("the SDP has more than one v= line (RFC 8866 §5: one, first)")
    session, sections = _split(lines)
    if not sections:
        raise InvalidSdp("the SDP has no m= section")
    for letter in "ost":
        if not any(key == letter for key, _ in session):
            raise InvalidSdp(f"the SDP has no {letter}= line (RFC 8866 §5)")
    shared = [(k, v) for k, v in _attributes(session) if k in _INHERITED]
    for key, value in _attributes(session):
        if key in SESSION_CHECKS:
            run(SESSION_CHECKS[key], key, value, "session level", NoFormats())
    for letter, value in session:
        if letter == "c":
            _connection(value, "session level")
    mids: dict[str, _Section] = {}
    for section in sections:
        mid = _check_section(section, shared, kind, codecs)
        if mid in mids:
            raise InvalidSdp(
                f"{section.where()}: mid {show(mid)} is also used by section "
                f"{mids[mid].number}; each m-line needs its own"
            )
        mids[mid] = section
    _check_bundle(session, sections, mids)


# --- lines ---


def _lines(sdp: str) -> list[tuple[str, str]]:
    bad = _CONTROL.search(sdp)
    if bad is not None:
        at = sdp.count("\n", 0, bad.start()) + 1
        raise InvalidSdp(f"line {at} contains the control character U+{ord(bad.group()[0]):04X}")
    result = []
    for number_, raw in enumerate(sdp.split("\n"), 1):
        line = raw.removesuffix("\r")
        if not line:
            continue  # aiortc skips blank lines too
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise InvalidSdp(f"line {number_} {show(line)} is not <letter>=<value> (RFC 8866 §5)")
        result.append((line[0], line[2:]))
    return result


def _split(lines: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[_Section]]:
    session: list[tuple[str, str]] = []
    sections: list[_Section] = []
    for letter, value in lines:
        if letter == "m":
            sections.append(_media_line(value, len(sections) + 1))
        elif not sections:
            if letter not in SESSION_LINES:
                raise InvalidSdp(f"{letter}= is not an SDP line type (RFC 8866 §5)")
            session.append((letter, value))
        elif letter not in MEDIA_LINES:
            raise InvalidSdp(f"{sections[-1].where()}: {letter}= is not allowed in an m= section")
        elif letter == "a":
            sections[-1].attributes.append(_attribute(value))
        elif letter == "c":
            sections[-1].connections.append(value)
    return session, sections


def _attributes(lines: list[tuple[str, str]]) -> list[tuple[str, str | None]]:
    return [_attribute(value) for letter, value in lines if letter == "a"]


def _attribute(text: str) -> tuple[str, str | None]:
    name, colon, value = text.partition(":")
    return name, (value if colon else None)


def _connection(value: str, where: str) -> None:
    if not CONNECTION.fullmatch(value):
        raise InvalidSdp(f"{where}: c={show(value)[1:-1]}: expected IN IP4|IP6 <address>")


def _media_line(value: str, number_: int) -> _Section:
    parts = value.split(" ")
    where = f"m= line of section {number_}"
    if len(parts) < 4 or "" in parts:
        raise InvalidSdp(
            f"{where} {show('m=' + value)} must be <media> <port> <transport> <format>..., "
            "separated by single spaces"
        )
    return _Section(number_, parts[0], parts[1], parts[2], parts[3:])


# --- one m= section ---


def _check_section(
    section: _Section, shared: list[tuple[str, str | None]], kind: Kind, codecs: Codecs | None
) -> str:
    """The section's mid, once everything in it is usable."""
    where = section.where()
    mid = section.mid
    if mid is None:
        raise InvalidSdp(f"{where}: no a=mid (RFC 8829 §5.2.1 requires one in each m-line)")
    if len(section.values("mid")) > 1:
        # aiortc takes the last, we the first: the two would disagree on which m-line is which
        raise InvalidSdp(f"{where}: more than one a=mid (RFC 5888 §4 gives an m-line one)")
    if not TOKEN.fullmatch(mid) or len(mid) > MAX_MID_LENGTH:
        raise InvalidSdp(
            f"{where}: mid {show(mid)} must be 1-{MAX_MID_LENGTH} token characters (RFC 5888)"
        )
    if "/" in section.port_text:
        raise InvalidSdp(f"{where}: a port count ({section.port_text}) is not supported")
    try:
        section.port = number(section.port_text, "port", 0, 65535)
    except InvalidValue as exc:
        raise InvalidSdp(f"{where}: {exc}") from None
    for connection in section.connections:
        _connection(connection, where)
    section.payload_types = frozenset(section.formats)
    section.mapped = frozenset((v or "").split(" ")[0] for v in section.values("rtpmap"))
    if section.kind in ("audio", "video"):
        _check_rtp_line(section)
    elif section.kind == "application":
        if section.proto not in SCTP_PROFILES:
            raise InvalidSdp(
                f"{where}: transport {show(section.proto)} is not one of "
                f"{', '.join(sorted(SCTP_PROFILES))}"
            )
    else:
        raise InvalidSdp(
            f"{where}: media type {show(section.kind)} is not supported (audio, video, application)"
        )
    for key, value in section.attributes:
        check = MEDIA_CHECKS.get(key)
        if check is not None:
            run(check, key, value, where, section)
    if section.kind in ("audio", "video"):
        try:
            check_simulcast(section.attributes, section.payload_types)
        except InvalidValue as exc:
            raise InvalidSdp(f"{where}: {exc}") from None
    _check_transport(where, shared + section.attributes, kind)
    if section.kind in ("audio", "video") and codecs is not None:
        _check_codecs(section, codecs.get(section.kind, ()))
    return mid


def _check_rtp_line(section: _Section) -> None:
    where = section.where()
    if section.proto not in RTP_PROFILES:
        plain = section.proto in ("RTP/AVP", "RTP/AVPF")
        reason = "is not encrypted; WebRTC media needs DTLS-SRTP" if plain else "is not supported"
        raise InvalidSdp(
            f"{where}: transport {show(section.proto)} {reason} (use UDP/TLS/RTP/SAVPF)"
        )
    for text in section.formats:
        try:
            payload_type = number(text, "payload type", 0, 127)
        except InvalidValue as exc:
            raise InvalidSdp(f"{where}: {exc}") from None
        if 72 <= payload_type <= 76:
            raise InvalidSdp(
                f"{where}: payload type {payload_type} collides with RTCP packet "
                "types under rtcp-mux (RFC 5761 §4)"
            )
    if not any(key == "rtcp-mux" for key, _ in section.attributes):
        raise InvalidSdp(
            f"{where}: no a=rtcp-mux; the server multiplexes RTP and RTCP on one port (RFC 5761)"
        )


def _check_transport(where: str, attributes: list[tuple[str, str | None]], kind: Kind) -> None:
    """ICE credentials and the DTLS fingerprint and role, from the m-line or the session."""
    latest = dict(attributes)  # media-level values come last and win, as in aiortc
    for name in ("ice-ufrag", "ice-pwd"):
        if latest.get(name) is None:
            raise InvalidSdp(f"{where}: no a={name} (RFC 8839 §5.4)")
    hashes = [(v or "").split(" ")[0].lower() for k, v in attributes if k == "fingerprint"]
    if not any(h in FINGERPRINT_BYTES for h in hashes):
        raise InvalidSdp(
            f"{where}: no a=fingerprint with {', '.join(FINGERPRINT_BYTES)} (RFC 8122 §5): "
            "without one the DTLS handshake cannot be verified"
        )
    setup = latest.get("setup")
    if setup is None:
        raise InvalidSdp(f"{where}: no a=setup, the DTLS role (RFC 4145 §4, RFC 8842)")
    if kind == "answer" and setup not in ("active", "passive"):
        raise InvalidSdp(
            f"{where}: a=setup:{setup} in an answer must be active or passive (RFC 8842)"
        )


def _check_codecs(section: _Section, supported: Collection[tuple[str, int]]) -> None:
    wanted = {(name.lower(), clock) for name, clock in supported}
    offered = set()
    for value in section.values("rtpmap"):
        name, clock = (value or "").split(" ", 1)[1].split("/")[:2]  # checked by _rtpmap
        offered.add((name.lower(), int(clock)))
    if not offered & wanted:
        names = ", ".join(sorted({f"{name}/{clock}" for name, clock in supported}))
        raise InvalidSdp(
            f"{section.where()}: no a=rtpmap for a codec the server supports ({names})"
        )


def _check_bundle(
    session: list[tuple[str, str]], sections: list[_Section], mids: dict[str, _Section]
) -> None:
    groups = [
        (value or "").split()[1:]
        for key, value in _attributes(session)
        if key == "group" and (value or "").split()[:1] == ["BUNDLE"]
    ]
    if len(groups) > 1:
        raise InvalidSdp(
            "more than one a=group:BUNDLE; the server has one transport per "
            "participant, so bundle every m-line in one group (RFC 8843)"
        )
    bundled = groups[0] if groups else []
    for mid in bundled:
        if mid not in mids:
            raise InvalidSdp(f"a=group:BUNDLE names mid {show(mid)}, which no m-line has")
    if bundled and mids[bundled[0]].port == 0:
        raise InvalidSdp(
            f"a=group:BUNDLE: its first mid {show(bundled[0])} has port 0, but "
            "that m-line carries the transport (RFC 8843)"
        )
    members = set(bundled)
    for section in sections:
        if section.port != 0 and section.mid not in members:
            raise InvalidSdp(
                f"{section.where()}: not in a=group:BUNDLE; the server has one "
                "transport per participant, so bundle every m-line (RFC 8843)"
            )


def mids(sdp: str) -> list[str | None]:
    """The mid of each m-line of an SDP this module accepted (or the server wrote), in order."""
    result: list[str | None] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            result.append(None)
        elif line.startswith("a=mid:") and result and result[-1] is None:
            result[-1] = line[len("a=mid:") :]
    return result
