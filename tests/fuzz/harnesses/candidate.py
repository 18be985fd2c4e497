"""Trickled ICE candidates (sfu/media/candidate.py parse_candidate, RFC 8839 §5.1): a candidate
or InvalidValue naming the wrong field."""

from __future__ import annotations

from sfu.media.candidate import InvalidValue, parse_candidate
from tests.fuzz.reader import Reader

FIELDS = (
    "candidate:1", "1", "UDP", "2122260223", "127.0.0.1", "40000", "typ", "host", "raddr", "::1",
    "rport", "9", "tcptype", "active", "generation", "0", "a=", "x.local", "256", "0", "-1",
    "99999999999999999999", "1e3", "fe80::1%eth0", "1.2.3", "", "\u0661", "TCP",
)  # fmt: skip


def check_candidate(text: str) -> None:
    try:
        candidate = parse_candidate(text)
    except InvalidValue as exc:
        assert str(exc)
        return
    assert 1 <= candidate.component <= 256 and 0 <= candidate.port <= 65535, candidate


def run(data: bytes) -> None:
    reader = Reader(data)
    if reader.uint() < 64:
        check_candidate(reader.rest().decode("utf-8", errors="replace"))
        return
    words = [reader.choice(FIELDS) if reader.uint() < 200 else reader.text(12) for _ in range(12)]
    check_candidate(" ".join(words[: 6 + reader.below(7)]))


def seeds() -> list[bytes]:
    text = b"candidate:1 1 UDP 2122260223 127.0.0.1 40000 typ host generation 0"
    return [b"\x00" + text, b"\xff" + bytes(range(40))]
