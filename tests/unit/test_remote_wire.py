"""sfu.remote: the api's values and errors as JSON, in length-prefixed frames."""

from __future__ import annotations

import asyncio
import json
import re
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu import api
from sfu.remote import wire
from sfu.remote.frames import (
    MAX_FRAME,
    FrameError,
    decode_body,
    encode_frame,
    read_frame,
    write_frame,
)

# JSON has no NaN or infinity (RFC 8259 §6): no api value carries one
FINITE = st.floats(allow_nan=False, allow_infinity=False)


def strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    if cls is api.ConnectionQualityReport:  # its floats, finite
        optional = st.none() | FINITE
        return st.builds(cls, rtt=optional, loss=FINITE, estimate=optional, allocated=FINITE)
    return st.from_type(cls)


@pytest.mark.parametrize("cls", wire.VALUES, ids=[c.__name__ for c in wire.VALUES])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_value_survives_a_frame(cls: type[Any], data: st.DataObject) -> None:
    value = data.draw(strategy(cls))
    frame = encode_frame({"id": 1, "ok": wire.encode(value)})
    (length,) = struct.unpack("!I", frame[:4])
    assert length == len(frame) - 4
    back = wire.decode(decode_body(frame[4:])["ok"], cls)
    assert back == value and type(back) is cls


@pytest.mark.parametrize("cls", wire.ERRORS, ids=[c.__name__ for c in wire.ERRORS])
def test_every_error_comes_back_as_its_class(cls: type[api.SfuError]) -> None:
    error = wire.decode_error(json.loads(json.dumps(wire.encode_error(cls("why \u00e9")))))
    assert type(error) is cls and error.message == "why \u00e9" and error.code == cls.code


def test_an_unknown_error_code_keeps_its_code() -> None:
    error = wire.decode_error({"code": "room-on-fire", "message": "m"})
    assert type(error) is api.SfuError and error.code == "room-on-fire"
    assert api.SfuError.code == "internal-error"  # the class's is untouched


def test_an_event_is_decoded_as_one_of_the_events() -> None:
    offer = api.ServerOffer("v=0\r\n", {"1": api.OfferedTrack("PA_1", "TR_1", "video")})
    assert wire.decode(wire.encode(offer), wire.EVENTS) == offer
    with pytest.raises(wire.WireError, match="expected an event, got TrackInfo"):
        wire.decode(wire.encode(api.TrackInfo("TR_1", "PA_1", "audio")), wire.EVENTS)


TRACK = {"t": "TrackInfo", "track_id": "TR_1", "participant_id": "PA_1", "kind": "audio"}


INFO = {"t": "ParticipantInfo", "participant_id": "p", "name": "n", "tracks": [{}]}


@pytest.mark.parametrize(
    ("data", "expected", "message"),
    [
        ([TRACK], api.TrackInfo, "expected an object, got list"),
        ({**TRACK, "t": "Nope"}, api.TrackInfo, "unknown value type 'Nope'"),
        ({k: v for k, v in TRACK.items() if k != "t"}, api.TrackInfo, "unknown value type None"),
        ({**TRACK, "t": "__class__"}, api.TrackInfo, "unknown value type '__class__'"),
        (TRACK, api.Answer, "expected Answer, got TrackInfo"),
        ({**TRACK, "kind": "text"}, api.TrackInfo, "kind: Input should be 'audio' or 'video'"),
        ({**TRACK, "track_id": 7}, api.TrackInfo, "track_id: Input should be a valid string"),
        ({k: v for k, v in TRACK.items() if k != "kind"}, api.TrackInfo, "kind: Field required"),
        ({**TRACK, "extra": 1}, api.TrackInfo, "TrackInfo: unknown member(s) extra"),
        (INFO, api.ParticipantInfo, "tracks.0.track_id: Field required"),
    ],
)
def test_what_is_not_a_value_is_refused_with_why(
    data: object, expected: type[Any], message: str
) -> None:
    with pytest.raises(wire.WireError, match=re.escape(message)):
        wire.decode(data, expected)


@pytest.mark.parametrize(
    "data",
    [None, [], {"code": "x"}, {"code": 1, "message": "m"}, {"code": "x", "message": "m", "y": 1}],
)
def test_what_is_not_an_error_is_refused(data: object) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_error(data)


def test_only_api_values_are_encoded() -> None:
    with pytest.raises(TypeError):
        wire.encode(object())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1]", "holds an object, not list"),
        (b"{", "not JSON"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b'{"a": -Infinity}', "-Infinity is not JSON"),
        (b"\xff{}", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),  # too deep: refused, not a crash
    ],
)
def test_a_body_that_is_not_an_object_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_body(body)


def test_frames_over_the_limit_are_refused_both_ways() -> None:
    with pytest.raises(FrameError, match="over"):
        encode_frame({"sdp": "x" * MAX_FRAME})
    with pytest.raises(FrameError, match="not a JSON frame"):
        encode_frame({"x": float("nan")})


async def _frames_of(data: bytes) -> list[dict[str, Any] | None]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames: list[dict[str, Any] | None] = []
    while (frame := await read_frame(reader)) is not None:
        frames.append(frame)
    frames.append(None)
    return frames


async def test_frames_are_read_back_in_order_until_a_clean_end() -> None:
    first, second = encode_frame({"id": 1}), encode_frame({"sid": "S", "event": {"t": "x"}})
    assert await _frames_of(first + second) == [{"id": 1}, {"sid": "S", "event": {"t": "x"}}, None]
    assert await _frames_of(b"") == [None]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "inside a frame's header"),
        (struct.pack("!I", 10) + b"{}", "inside a frame of 10 bytes"),
        (struct.pack("!I", MAX_FRAME + 1), "over"),
        (struct.pack("!I", 2) + b"[]", "holds an object"),
    ],
)
async def test_a_broken_stream_raises_frame_error(data: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        await _frames_of(encode_frame({"ok": 1}) + data)


async def test_frames_cross_a_real_socket_pair() -> None:
    import socket

    left, right = socket.socketpair()
    reader, left_writer = await asyncio.open_connection(sock=left)
    _right_reader, writer = await asyncio.open_connection(sock=right)
    offer = api.ServerOffer("v=0\r\n" * 20_000, {})  # 100 kB: more than one read
    write_frame(writer, {"sid": "S1", "event": wire.encode(offer)})
    await writer.drain()
    writer.close()
    frame = await read_frame(reader)
    assert frame is not None and wire.decode(frame["event"], wire.EVENTS) == offer
    assert await read_frame(reader) is None
    left_writer.close()
