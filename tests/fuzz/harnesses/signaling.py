"""Signaling messages (signaling/messages.py parse_client_message): any text frame gives a
message or a ProtocolError with a known code and a message fit for the client (no Python
reprs, bounded)."""

from __future__ import annotations

import json

from signaling.messages import ProtocolError, parse_client_message
from tests.fuzz.harnesses.jsonish import TYPES, obj
from tests.fuzz.reader import Reader

CODES = {"bad-json", "invalid-message", "unsupported-version"}
_REPRS = ("Error(", "Exception(", "Traceback", "<class ", "object at 0x")


def check_text(text: str) -> None:
    try:
        parse_client_message(text)
    except ProtocolError as exc:
        assert exc.code in CODES, exc.code
        message = str(exc.message)
        assert message, "an error without a message"
        for marker in _REPRS:
            assert marker not in message, f"a Python repr in an error message: {message!r}"


def run(data: bytes) -> None:
    reader = Reader(data)
    mode = reader.uint()
    if mode < 64:
        check_text(reader.rest().decode("utf-8", errors="replace"))
        return
    message = obj(reader)
    if mode & 1:
        message["type"] = reader.choice(TYPES)
    if mode & 2:
        message["v"] = 1
    check_text(json.dumps(message))


def seeds() -> list[bytes]:
    texts = [
        '{"type":"join","v":1,"room":"r","name":"n"}',
        '{"type":"offer","sdp":"v=0","tracks":{"0":{"source":"camera"}},"requestId":"1"}',
        '{"type":"candidate","candidate":"candidate:1 1 UDP 1 127.0.0.1 9 typ host","sdpMid":"0"}',
        '{"type":"setTrackSettings","trackIds":["a"],"maxLayer":1,"maxTemporalLayer":2}',
        '{"type":"resume","v":1,"token":"t","lastSeq":3}',
    ]
    return [b"\x00" + t.encode() for t in texts] + [b"\xff" + bytes(range(64))]
