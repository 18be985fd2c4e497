"""The api on the wire (sfu/remote/wire.py, sfu/remote/frames.py): what a worker or another
node sends. Any frame body is an object or a FrameError; any object decodes to a value of the
class asked for, which encodes back to an equal one, or raises WireError with a message;
likewise errors. Nothing else escapes (a pydantic exception, a TypeError, a RecursionError).

Inputs are raw bodies, or objects built from the api's own class and field names with values
that are nearly right (jsonish's edge values, nested objects, encoded real values with a member
changed).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from sfu import api
from sfu.remote import wire
from sfu.remote.frames import FrameError, decode_body, encode_frame
from tests.fuzz.harnesses.jsonish import value
from tests.fuzz.reader import Reader

FIELDS = sorted({f.name for cls in wire.VALUES for f in dataclasses.fields(cls)})
NAMES = [cls.__name__ for cls in wire.VALUES]
EXAMPLES: list[Any] = [
    api.TrackInfo("TR_1", "PA_1", "video", "camera", muted=True),
    api.ParticipantJoined(
        api.ParticipantInfo("PA_1", "ann", (api.TrackInfo("TR_1", "PA_1", "audio"),))
    ),
    api.ServerOffer("v=0\r\n", {"1": api.OfferedTrack("PA_1", "TR_1", "video")}),
    api.Answer("v=0\r\n", (api.PublishedTrack("0", "TR_1", "audio"),)),
    api.PublisherLayers("TR_1", (api.LayerActivity("h", True), api.LayerActivity("f", False))),
    api.ConnectionQualityReport("good", 0.05, 0.01, 1e6, 5e5, False),
    api.Grants(sources=("camera",)),
    api.TrackSettings(max_layer=1, max_width=320),
    api.RoomSummary("r", 2, 3),
]  # fmt: skip


def check_value(data: object, expected: type[Any] | tuple[type[Any], ...]) -> None:
    try:
        decoded = wire.decode(data, expected)
    except wire.WireError as exc:
        assert str(exc), "a WireError without a message"
        return
    assert isinstance(decoded, expected)
    again = wire.decode(json.loads(json.dumps(wire.encode(decoded))), expected)
    assert again == decoded, (again, decoded)


def check_error(data: object) -> None:
    try:
        error = wire.decode_error(data)
    except wire.WireError:
        return
    assert isinstance(error, api.SfuError) and wire.encode_error(error) == data


def _object(reader: Reader) -> dict[str, Any]:
    # a real value, then members changed, dropped or added; or only a class name
    real = reader.flag()
    encoded: dict[str, Any] = (
        wire.encode(reader.choice(EXAMPLES)) if real else {"t": reader.choice(NAMES)}
    )
    for _ in range(reader.below(6)):
        key = reader.choice(FIELDS) if reader.uint() < 230 else reader.text(12)
        if reader.uint() < 40:
            encoded.pop(key, None)
        elif key in encoded and isinstance(encoded[key], dict) and reader.flag():
            encoded[key] = {**encoded[key], reader.choice(FIELDS): value(reader, 2)}
        else:
            encoded[key] = value(reader, 1)
    return encoded


def run(data: bytes) -> None:
    reader = Reader(data)
    mode = reader.uint()
    if mode < 48:
        try:
            frame = decode_body(reader.rest())
        except FrameError as exc:
            assert str(exc)
            return
        check_value(frame.get("ok", frame), tuple(wire.VALUES))
        check_value(frame.get("event"), wire.EVENTS)
        check_error(frame.get("err"))
        encode_frame(frame)  # what was read can be written again (unless it is over the limit)
        return
    try:  # through a frame, as all that reaches the decoder does (no NaN: not JSON)
        encoded = decode_body(encode_frame(_object(reader))[4:])
    except FrameError:
        return
    expected = wire.EVENTS if mode & 1 else _BY_NAME.get(str(encoded.get("t")), api.TrackInfo)
    check_value(encoded, expected)
    check_error({"code": encoded.get("t"), "message": encoded.get("name", "m")})


_BY_NAME = {cls.__name__: cls for cls in wire.VALUES}


def seeds() -> list[bytes]:
    bodies = [json.dumps({"id": 1, "ok": wire.encode(v)}).encode() for v in EXAMPLES]
    bodies.append(b'{"id":2,"err":{"code":"invalid-sdp","message":"m"}}')
    return [b"\x00" + b for b in bodies] + [bytes([0xFF, 1, i]) for i in range(len(EXAMPLES))]
