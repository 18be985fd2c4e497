"""sfu.media.candidate: what browsers trickle is read, the rest is refused with the field named."""

from __future__ import annotations

import pytest

from sfu.media.candidate import IceCandidate, InvalidValue, parse_candidate
from tests.unit.sdp_samples import CHROMIUM_CANDIDATES, FIREFOX_CANDIDATES


@pytest.mark.parametrize("line", CHROMIUM_CANDIDATES + FIREFOX_CANDIDATES)
def test_browser_candidates_parse(line: str) -> None:
    candidate = parse_candidate(line)
    assert candidate.component == 1
    assert candidate.transport in ("udp", "tcp")
    assert line.split()[4] == candidate.address


def test_fields() -> None:
    assert parse_candidate(CHROMIUM_CANDIDATES[1]) == IceCandidate(
        foundation="854413036",
        component=1,
        transport="udp",
        priority=1685987071,
        address="203.0.113.7",
        port=63022,
        type="srflx",
        related_address="192.0.2.1",
        related_port=63022,
    )
    assert parse_candidate(FIREFOX_CANDIDATES[1]).tcp_type == "active"


@pytest.mark.parametrize(
    "prefix", ["", "candidate:", "a=candidate:"], ids=["bare", "attribute", "sdp-line"]
)
def test_prefixes(prefix: str) -> None:
    assert parse_candidate(prefix + "1 1 udp 2130706431 127.0.0.1 5000 typ host").port == 5000


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("garbage", "candidate 'garbage' has 1 field, RFC 8839 §5.1 needs at least 8"),
        ("candidate:1 1 udp", "has 3 fields"),
        ("", "has 0 fields"),
        ("candidate:1! 1 udp 1 127.0.0.1 9 typ host", "foundation '1!' must be 1-32"),
        ("candidate:" + "f" * 33 + " 1 udp 1 127.0.0.1 9 typ host", "foundation"),
        ("candidate:1 0 udp 1 127.0.0.1 9 typ host", "component 0 is out of range 1-256"),
        ("candidate:1 one udp 1 127.0.0.1 9 typ host", "component 'one' is not a number"),
        ("candidate:1 1 u(p 1 127.0.0.1 9 typ host", "transport 'u(p' is not a token"),
        ("candidate:1 1 udp 0 127.0.0.1 9 typ host", "priority 0 is out of range 1-2147483647"),
        ("candidate:1 1 udp 2147483648 127.0.0.1 9 typ host", "priority 2147483648 is out"),
        ("candidate:1 1 udp -5 127.0.0.1 9 typ host", "priority '-5' is not a number"),
        ("candidate:1 1 udp 1 300.1.1.1 9 typ host", "address '300.1.1.1' is neither an IP"),
        ("candidate:1 1 udp 1 a..b 9 typ host", "address 'a..b' is neither"),
        ("candidate:1 1 udp 1 127.0.0.1 99999999999 typ host", "port 99999999999 is out of"),
        ("candidate:1 1 udp 1 127.0.0.1 65536 typ host", "port 65536 is out of range 0-65535"),
        # a digit to str.isdigit(), not to the grammar: FULLWIDTH DIGIT NINE
        ("candidate:1 1 udp 1 127.0.0.1 \uff19 typ host", "port '\uff19' is not a number"),
        ("candidate:1 1 udp 1 127.0.0.1 9 type host", "expected 'typ' after the port"),
        ("candidate:1 1 udp 1 127.0.0.1 9 typ h@st", "candidate type 'h@st' is not a token"),
        ("candidate:1 1 udp 1 127.0.0.1 9 typ host generation", "'generation' after the"),
        ("candidate:1 1 udp 1 127.0.0.1 9 typ srflx raddr x_y rport 1", "raddr 'x_y'"),
        ("candidate:1 1 udp 1 127.0.0.1 9 typ srflx raddr ::1 rport 1e3", "rport '1e3'"),
        ("candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype maybe", "tcptype 'maybe' is not"),
        ("candidate:1 1 udp 1 127.0.0.1 " + "9" * 5000 + " typ host", "port 9999"),
    ],
)
def test_refused_with_the_field_named(line: str, message: str) -> None:
    with pytest.raises(InvalidValue) as raised:
        parse_candidate(line)
    assert message in str(raised.value)
    assert "Error(" not in str(raised.value)
    assert len(str(raised.value)) < 300


def test_unknown_types_and_extensions_are_kept() -> None:
    # RFC 8839 §5.1: unknown candidate types and extensions are for the receiver to ignore
    candidate = parse_candidate("candidate:1 1 udp 1 127.0.0.1 9 typ future foo bar")
    assert candidate.type == "future"
