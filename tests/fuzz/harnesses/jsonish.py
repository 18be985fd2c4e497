"""JSON values built from fuzzer bytes, leaning to the field names and edge values the
signaling messages and access tokens use."""

from __future__ import annotations

from typing import Any

from tests.fuzz.reader import Reader

KEYS = (
    "type", "v", "requestId", "room", "name", "autoSubscribe", "token", "lastSeq", "sdp",
    "tracks", "source", "candidate", "sdpMid", "sdpMLineIndex", "trackId", "muted",
    "trackIds", "paused", "maxLayer", "maxWidth", "maxHeight", "maxTemporalLayer",
    "sub", "exp", "nbf", "iat", "grants", "publish", "subscribe", "admin", "sources",
    "kid", "alg", "typ",
)  # fmt: skip
TYPES = (
    "join", "resume", "offer", "answer", "candidate", "mute", "leave", "subscribe",
    "unsubscribe", "setTrackSettings",
)  # fmt: skip
STRINGS = (
    "", "a", "0", "room-1", " ", "\u200b", "\x00", "\x7f", "é", "\ud800", "A" * 65, "A" * 300,
    "camera", "screen", "HS256", "none", "RS256", "k1", "v=0\r\n", "\U0001f600",
)  # fmt: skip
NUMBERS: tuple[Any, ...] = (
    0, 1, -1, 2, 3, 255, 256, 1023, 1024, 16384, 16385, 2**31, 2**53 + 1, 2**64, -(2**63),
    0.5, 1e308, -0.0, 1.0, 10**400, float("inf"), float("nan"),
)  # fmt: skip


def value(reader: Reader, depth: int = 0) -> Any:
    kind = reader.below(10 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return reader.flag()
    if kind == 2:
        return reader.choice(NUMBERS)
    if kind == 3:
        return reader.choice(STRINGS)
    if kind == 4:
        return reader.text(64)
    if kind == 5:
        return reader.choice(TYPES)
    if kind in (6, 7):
        return [value(reader, depth + 1) for _ in range(reader.below(4))]
    return obj(reader, depth + 1)


def obj(reader: Reader, depth: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for _ in range(reader.below(8)):
        key = reader.choice(KEYS) if reader.uint() < 220 else reader.text(16)
        result[key] = value(reader, depth)
    return result
