"""ICE candidate attributes (RFC 8839 §5.1), read strictly and explained when wrong.

aiortc's ``candidate_from_sdp`` asserts on a short line and calls ``int()`` on whatever stands
where a number should be, so a client's typo surfaced as an AssertionError. :func:`parse_candidate`
checks the grammar first and says which field is wrong::

    candidate-attribute = "candidate" ":" foundation SP component-id SP transport SP priority SP
                          connection-address SP port SP "typ" SP cand-type
                          [SP "raddr" SP connection-address] [SP "rport" SP port]
                          *(SP extension-att-name SP extension-att-value)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]{1,32}")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+")  # RFC 8866 §9 token
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
MAX_PRIORITY = 2**31 - 1  # RFC 8445 §5.1.2.1
TCP_TYPES = ("active", "passive", "so")  # RFC 6544 §4.5


class InvalidValue(ValueError):
    """A value a client sent that the server cannot use; the message is written for that client."""


@dataclass(frozen=True, slots=True)
class IceCandidate:
    foundation: str
    component: int
    transport: str  # lowercase: "udp", "tcp", ...
    priority: int
    address: str  # an IP address or a host name (e.g. an mDNS .local name)
    port: int
    type: str  # "host", "srflx", "prflx", "relay" or an extension
    related_address: str | None = None
    related_port: int | None = None
    tcp_type: str | None = None


def show(text: str, limit: int = 40) -> str:
    """``text`` quoted for an error message: cut to ``limit`` and with non-printables as '?'."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return "'" + "".join(c if c.isprintable() else "?" for c in cut) + "'"


def number(text: str, what: str, low: int, high: int) -> int:
    """``text`` as a decimal integer in ``low..high``, else InvalidValue naming ``what``."""
    if not (text.isascii() and text.isdigit()):
        raise InvalidValue(f"{what} {show(text)} is not a number from {low} to {high}")
    if len(text) > 20 or not low <= int(text) <= high:  # no int() of a 5,000-digit string
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InvalidValue(f"{what} {shown} is out of range {low}-{high}")
    return int(text)


def check_address(text: str, what: str = "address") -> str:
    """An IPv4 or IPv6 address or a host name (RFC 8839 connection-address)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    labels = text.removesuffix(".").split(".")
    if (
        len(text) <= 253
        and all(_HOST_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # 300.1.2.3 is a broken IPv4 address, not a name
    ):
        return text
    raise InvalidValue(f"{what} {show(text)} is neither an IP address nor a host name")


def parse_candidate(value: str) -> IceCandidate:
    """Read a candidate as ``RTCIceCandidate.candidate`` holds it ("candidate:..."; "a=" allowed).

    Raises InvalidValue with a message that names the wrong field.
    """
    text = value.removeprefix("a=").removeprefix("candidate:")
    fields = text.split()
    if len(fields) < 8:
        raise InvalidValue(
            f"candidate {show(value)} has {len(fields)} field{'s' * (len(fields) != 1)}, "
            "RFC 8839 §5.1 needs at least 8: foundation, component, transport, priority, "
            "address, port, 'typ' and the candidate type"
        )
    foundation, component, transport, priority, address, port, typ, kind = fields[:8]
    if not _ICE_CHARS.fullmatch(foundation):
        raise InvalidValue(
            f"foundation {show(foundation)} must be 1-32 characters from A-Z a-z 0-9 + /"
        )
    if not _TOKEN.fullmatch(transport):
        raise InvalidValue(f"transport {show(transport)} is not a token such as UDP")
    if typ != "typ":
        raise InvalidValue(f"expected 'typ' after the port, found {show(typ)}")
    if not _TOKEN.fullmatch(kind):
        raise InvalidValue(f"candidate type {show(kind)} is not a token such as host")
    candidate = IceCandidate(
        foundation=foundation,
        component=number(component, "component", 1, 256),
        transport=transport.lower(),
        priority=number(priority, "priority", 1, MAX_PRIORITY),
        address=check_address(address),
        port=number(port, "port", 0, 65535),
        type=kind,
    )
    return _with_extensions(candidate, fields[8:])


def _with_extensions(candidate: IceCandidate, rest: list[str]) -> IceCandidate:
    if len(rest) % 2:
        raise InvalidValue(f"{show(rest[-1])} after the candidate type has no value")
    for name, value in zip(rest[::2], rest[1::2], strict=True):
        if not _TOKEN.fullmatch(name):
            raise InvalidValue(f"extension name {show(name)} is not a token")
        if name == "raddr":
            candidate = replace(candidate, related_address=check_address(value, "raddr"))
        elif name == "rport":
            candidate = replace(candidate, related_port=number(value, "rport", 0, 65535))
        elif name == "tcptype":
            if value not in TCP_TYPES:
                raise InvalidValue(f"tcptype {show(value)} is not one of {', '.join(TCP_TYPES)}")
            candidate = replace(candidate, tcp_type=value)
    return candidate
