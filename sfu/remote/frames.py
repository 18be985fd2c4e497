"""Length-prefixed JSON frames on an asyncio stream: a worker's UNIX socket, a node link.

A frame is a 4-byte big-endian length, then that many bytes of UTF-8 JSON holding one object.
JSON because the traffic is signaling (tens of messages a second per participant, SDP the bulk)
and the stdlib has it; a length prefix because a stream has no message boundaries. A frame over
:data:`MAX_FRAME`, a body that is not a JSON object (NaN and Infinity included: not JSON, RFC
8259 §6), or a stream that ends inside a frame raise :class:`FrameError`; the connection is then
not worth reading on, as its framing is lost.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Mapping
from typing import Any

from sfu.remote.wire import WireError

#: The largest frame either side writes or reads (bytes): a join's answer with many m-lines is a
#: few hundred kB; anything near this is a defect or an attack.
MAX_FRAME = 4 * 1024 * 1024
_HEADER = struct.Struct("!I")


class FrameError(WireError):
    """The stream's framing is broken; the message says how."""


def _no_constant(name: str) -> Any:
    raise FrameError(f"{name} is not JSON")


def encode_frame(frame: Mapping[str, Any]) -> bytes:
    """The frame's bytes, header included; FrameError if it is over :data:`MAX_FRAME` or not
    JSON (NaN, a non-string key)."""
    try:
        body = json.dumps(frame, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise FrameError(f"not a JSON frame: {exc}") from None
    if len(body) > MAX_FRAME:
        raise FrameError(f"a frame of {len(body)} bytes is over {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """A frame's body (after its header) as the object it holds."""
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FrameError(f"a frame is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FrameError(f"a frame holds an object, not {type(value).__name__}")
    return value


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next frame's object; None when the stream ended cleanly between frames."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FrameError("the stream ended inside a frame's header") from None
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise FrameError(f"a frame of {length} bytes is over {MAX_FRAME}")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise FrameError(f"the stream ended inside a frame of {length} bytes") from None
    return decode_body(body)


def write_frame(writer: asyncio.StreamWriter, frame: Mapping[str, Any]) -> None:
    """Queue ``frame`` on ``writer`` (the caller drains); nothing is written if it is refused."""
    writer.write(encode_frame(frame))
