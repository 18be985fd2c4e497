"""The values of the a= lines in a client's SDP that the server reads, checked one at a time.

Each check raises InvalidValue saying what the value should look like; :func:`run` adds where
the line is. Grammars: rtpmap and fmtp (RFC 8866), rtcp-fb (RFC 4585), extmap (RFC 8285), ssrc
and ssrc-group (RFC 5576), rtcp (RFC 3605), fingerprint (RFC 8122), setup (RFC 4145), ice-ufrag,
ice-pwd and candidate (RFC 8839), sctp-port and max-message-size (RFC 8841), rid (RFC 8851) and
simulcast (RFC 8853; sfu.media.sdp_simulcast); and each value must have the shape aiortc's parser
expects, as it splits and converts without checking.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sfu.media.candidate import InvalidValue, number, parse_candidate, show
from sfu.media.sdp_simulcast import parse_rid, parse_simulcast

#: fingerprint hash functions the DTLS transport verifies (aiortc), and their digest sizes
FINGERPRINT_BYTES = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
#: fmtp parameters aiortc reads as integers
INTEGER_FMTP = frozenset(
    {"apt", "max-fr", "max-fs", "maxplaybackrate", "minptime", "stereo", "useinbandfec"}
)
TOKEN = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+")  # RFC 8866 §9
CONNECTION = re.compile(r"IN (IP4|IP6) (\S+)")
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")
_HEX_PAIRS = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})*")
_RTPMAP = re.compile(r"(\S+) ([^/\s]+)/(\S+?)(?:/(\S+))?")
_EXTMAP = re.compile(r"([^/\s]+)(?:/(sendonly|recvonly|sendrecv|inactive))? (\S+)")
MAX_SSRC = 2**32 - 1


class Formats(Protocol):
    """The payload types of the m-line an attribute is in."""

    @property
    def payload_types(self) -> frozenset[str]: ...  # on the m= line

    @property
    def mapped(self) -> frozenset[str]: ...  # with an a=rtpmap


@dataclass(frozen=True)
class NoFormats:
    """What session-level attributes see."""

    payload_types: frozenset[str] = frozenset()
    mapped: frozenset[str] = frozenset()


Check = Callable[[str, Formats], None]


class InvalidSdp(InvalidValue):
    """An SDP the server refuses; the message says where and what, for the client's author."""


def _fingerprint(value: str, _: Formats) -> None:
    parts = value.split(" ")
    if len(parts) != 2 or not TOKEN.fullmatch(parts[0]) or not _HEX_PAIRS.fullmatch(parts[1]):
        raise InvalidValue("expected <hash function> <hex bytes separated by colons>")
    size = FINGERPRINT_BYTES.get(parts[0].lower())
    if size is not None and len(parts[1]) != 3 * size - 1:
        raise InvalidValue(f"a {parts[0]} fingerprint has {size} bytes")


def _setup(value: str, _: Formats) -> None:
    if value not in ("actpass", "active", "passive"):
        raise InvalidValue("the DTLS role must be actpass, active or passive")


def _credential(low: int) -> Check:
    def check(value: str, _: Formats) -> None:
        if not _ICE_CHARS.fullmatch(value) or not low <= len(value) <= 256:
            raise InvalidValue(f"must be {low}-256 characters from A-Z a-z 0-9 + /")

    return check


def _group(value: str, _: Formats) -> None:
    if not value.split():  # aiortc splits these on any whitespace
        raise InvalidValue("expected <semantics> <identifier>...")


def _rtpmap(value: str, formats: Formats) -> None:
    match = _RTPMAP.fullmatch(value)
    if match is None:
        raise InvalidValue("expected <payload type> <encoding>/<clock rate>[/<channels>]")
    payload_type, _, clock, channels = match.groups()
    if payload_type not in formats.payload_types:
        raise InvalidValue(f"payload type {show(payload_type)} is not listed on the m= line")
    number(clock, "clock rate", 1, 2**32 - 1)
    if channels is not None:
        number(channels, "channel count", 1, 255)


def _fmtp(value: str, formats: Formats) -> None:
    payload_type, space, parameters = value.partition(" ")
    if not space:
        raise InvalidValue("expected <payload type> <parameters>")
    if payload_type not in formats.mapped:
        raise InvalidValue(f"payload type {show(payload_type)} has no a=rtpmap")
    for parameter in parameters.split(";"):
        name, _, text = parameter.partition("=")
        if name in INTEGER_FMTP:
            number(text, name, 0, 2**32 - 1)


def _rtcp_fb(value: str, _: Formats) -> None:
    parts = value.split(" ")
    if len(parts) < 2 or not parts[1]:
        raise InvalidValue("expected <payload type or *> <feedback type> [<parameter>]")


def _extmap(value: str, _: Formats) -> None:
    match = _EXTMAP.fullmatch(value)
    if match is None:
        raise InvalidValue(
            "expected <id>[/<direction>] <URI> (extension attributes are not supported)"
        )
    number(match.group(1), "extension id", 1, 255)


def _ssrc(value: str, _: Formats) -> None:
    ssrc, _space, attribute = value.partition(" ")
    number(ssrc, "SSRC", 0, MAX_SSRC)
    if ":" not in attribute or not attribute.split(":")[0]:
        raise InvalidValue("expected <ssrc> <attribute>:<value>")


def _ssrc_group(value: str, _: Formats) -> None:
    semantics, *ssrcs = value.split() or [""]  # aiortc splits these on any whitespace
    if not TOKEN.fullmatch(semantics):
        raise InvalidValue("expected <semantics> <ssrc>... (RFC 5576 §4.2)")
    for ssrc in ssrcs:
        number(ssrc, "SSRC", 0, MAX_SSRC)


def _rtcp(value: str, _: Formats) -> None:
    port, space, address = value.partition(" ")
    number(port, "port", 0, 65535)
    if space and not CONNECTION.fullmatch(address):  # "9 " too: aiortc reads an address after it
        raise InvalidValue("expected <port> [IN IP4|IP6 <address>]")


def _candidate(value: str, _: Formats) -> None:
    parse_candidate(value)


def _port(value: str, _: Formats) -> None:
    number(value, "port", 0, 65535)


def _size(value: str, _: Formats) -> None:
    number(value, "size", 0, 2**32 - 1)


def _sctpmap(value: str, _: Formats) -> None:
    port, space, _protocol = value.partition(" ")
    number(port, "port", 0, 65535)
    if not space:
        raise InvalidValue("expected <port> <protocol>")


def _rid(value: str, _: Formats) -> None:
    parse_rid(value)


def _simulcast(value: str, _: Formats) -> None:
    parse_simulcast(value)


#: checks of the attributes that may stand at session level (those of the transport)
SESSION_CHECKS: dict[str, Check] = {
    "fingerprint": _fingerprint,
    "setup": _setup,
    "ice-ufrag": _credential(4),
    "ice-pwd": _credential(22),
    "group": _group,
    "msid-semantic": _group,
}
MEDIA_CHECKS: dict[str, Check] = {
    **SESSION_CHECKS,
    "rtpmap": _rtpmap,
    "fmtp": _fmtp,
    "rtcp-fb": _rtcp_fb,
    "extmap": _extmap,
    "ssrc": _ssrc,
    "ssrc-group": _ssrc_group,
    "rtcp": _rtcp,
    "candidate": _candidate,
    "sctp-port": _port,
    "max-message-size": _size,
    "sctpmap": _sctpmap,
    "rid": _rid,
    "simulcast": _simulcast,
}


def run(check: Check, key: str, value: str | None, where: str, formats: Formats) -> None:
    """``check`` of the line a=key:value, its failure told as '<where>: a=key:value: <why>'."""
    if value is None:
        raise InvalidSdp(f"{where}: a={key} needs a value")
    try:
        check(value, formats)
    except InvalidValue as exc:
        raise InvalidSdp(f"{where}: a={key}:{show(value)[1:-1]}: {exc}") from None
