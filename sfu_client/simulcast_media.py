"""The frames of a simulcast publisher: one VP8 encoder per layer, or pre-encoded layers.

A :class:`LayerSource` hands the publisher, per source frame, one encoded VP8 frame for each
layer it asks for, a keyframe where it asks for one. :class:`EncodedLayers` encodes a video
track at several sizes (libvpx, realtime, one thread per call for all layers);
:class:`PreEncodedLayers` plays clips encoded once (load tests: no encoding per publisher).
:func:`vp8_payloads` packetizes a frame (RFC 7741).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from sfu_client.media import realtime_vp8_encoder

VIDEO_CLOCK_RATE = 90_000
#: RTP payload bytes per packet, VP8 descriptor included (room for SRTP and headers in 1280)
MAX_PAYLOAD = 1200
#: bits per pixel per frame a layer's encoder targets when no bitrate is given
BITS_PER_PIXEL = 0.1
MIN_BITRATE = 30_000


def vp8_payloads(frame: bytes, picture_id: int, max_size: int = MAX_PAYLOAD) -> list[bytes]:
    """RTP payloads of one VP8 frame (RFC 7741 §4.2): X=1, S=1 on the first (partition 0),
    I=1 with a 15-bit picture id (M=1). No TL0PICIDX/TID/KEYIDX: one temporal layer."""
    if not frame:
        return []
    ident = bytes((0x80, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF))
    room = max_size - 1 - len(ident)
    chunks = [frame[pos : pos + room] for pos in range(0, len(frame), room)]
    first = b"\x90" + ident + chunks[0]
    return [first, *(b"\x80" + ident + chunk for chunk in chunks[1:])]


def is_keyframe(frame: bytes) -> bool:
    """RFC 6386 §9.1: bit 0 of a VP8 frame's first byte is 0 on a key frame."""
    return bool(frame) and not frame[0] & 1


def keyframe_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a VP8 key frame header (RFC 6386 §9.1), else None."""
    if len(frame) < 10 or not is_keyframe(frame) or frame[3:6] != b"\x9d\x01\x2a":
        return None
    return (
        int.from_bytes(frame[6:8], "little") & 0x3FFF,
        int.from_bytes(frame[8:10], "little") & 0x3FFF,
    )


class LayerSource(Protocol):
    """Where a simulcast publisher's frames come from."""

    async def next_frames(self, wanted: Mapping[str, bool]) -> tuple[int, dict[str, bytes]]:
        """Wait for the next frame time; return it (90 kHz ticks, increasing) and an encoded
        frame for each rid of ``wanted``, a keyframe where ``wanted[rid]`` is true. Raises
        MediaStreamError when the source ended."""
        ...

    def close(self) -> None: ...


# --- encoding a track ---


@dataclass(frozen=True, slots=True)
class LayerSize:
    """How a layer is made from the source: its size divided by ``scale`` (as the browsers'
    ``scaleResolutionDownBy``), at ``bitrate`` bits/s (None: from its size)."""

    rid: str
    scale: float = 1.0
    bitrate: int | None = None


class _LayerEncoder:
    """One libvpx encoder; made again when the input size changes."""

    def __init__(self, layer: LayerSize) -> None:
        if layer.scale < 1.0:
            raise ValueError(f"layer {layer.rid}: scale {layer.scale} is below 1 (no upscaling)")
        self.layer = layer
        self._codec: av.VideoCodecContext | None = None

    def size(self, width: int, height: int) -> tuple[int, int]:
        scale = self.layer.scale
        return max(2, int(width / scale)), max(2, int(height / scale))

    def encode(self, frame: av.VideoFrame, keyframe: bool, fps: float) -> bytes:
        width, height = self.size(frame.width, frame.height)
        scaled = frame.reformat(width=width, height=height, format="yuv420p")
        scaled.pts, scaled.time_base = frame.pts, frame.time_base
        scaled.pict_type = (
            av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        )
        codec = self._codec
        if codec is None or (codec.width, codec.height) != (width, height):
            codec = self._codec = self._open(width, height, fps)
        return b"".join(bytes(p) for p in codec.encode(scaled))

    def _open(self, width: int, height: int, fps: float) -> av.VideoCodecContext:
        bitrate = self.layer.bitrate or max(
            MIN_BITRATE, round(width * height * fps * BITS_PER_PIXEL)
        )
        # keyframes only when asked (PLI/FIR, a layer turned on)
        return realtime_vp8_encoder(width, height, bitrate, fractions.Fraction(1, VIDEO_CLOCK_RATE))


class EncodedLayers:
    """A video track encoded at each layer's size, one frame of the track for all layers."""

    def __init__(
        self, track: MediaStreamTrack, layers: Sequence[LayerSize], fps: float = 30.0
    ) -> None:
        if track.kind != "video":
            raise ValueError(f"simulcast needs a video track, got {track.kind}")
        self.track = track
        self.fps = fps  # for the bitrate of layers that name none
        self._encoders = {layer.rid: _LayerEncoder(layer) for layer in layers}
        self._last_pts: int | None = None

    async def next_frames(self, wanted: Mapping[str, bool]) -> tuple[int, dict[str, bytes]]:
        frame = await self.track.recv()
        if not isinstance(frame, av.VideoFrame):
            raise MediaStreamError("simulcast source returned no video frame")
        ticks = self._ticks(frame)
        if not wanted:
            return ticks, {}
        frames = await asyncio.to_thread(self._encode, frame, dict(wanted))
        return ticks, frames

    def _ticks(self, frame: av.VideoFrame) -> int:
        if frame.pts is None or frame.time_base is None:
            ticks = round(time.monotonic() * VIDEO_CLOCK_RATE)
        else:
            ticks = round(frame.pts * frame.time_base * VIDEO_CLOCK_RATE)
        if self._last_pts is not None and ticks <= self._last_pts:
            ticks = self._last_pts + 1  # RTP timestamps of new frames must move forward
        self._last_pts = ticks
        return ticks

    def _encode(self, frame: av.VideoFrame, wanted: dict[str, bool]) -> dict[str, bytes]:
        return {
            rid: self._encoders[rid].encode(frame, keyframe, self.fps)
            for rid, keyframe in wanted.items()
        }

    def close(self) -> None:
        self.track.stop()


# --- pre-encoded layers ---


class EncodedClip(Protocol):
    """Frames encoded once and played in a loop; frame 0 is a keyframe (loadtest.media)."""

    @property
    def frames(self) -> Sequence[bytes]: ...

    @property
    def frame_period(self) -> float: ...


class PreEncodedLayers(MediaStreamTrack):
    """Simulcast layers of one clip, each encoded once, sent without encoding (load tests).

    Publish it with ``SfuClient.publish_simulcast``; the publisher reads the clips itself
    (``recv()`` is not used). All layers advance together at the clip's frame rate; a layer
    asked for a keyframe (or turned on) restarts its clip at its keyframe. Timestamps keep
    increasing across loops and restarts.
    """

    kind = "video"

    def __init__(self, clips: Mapping[str, EncodedClip]) -> None:
        super().__init__()
        if not clips:
            raise ValueError("pre-encoded simulcast needs at least one layer")
        periods = {clip.frame_period for clip in clips.values()}
        if len(periods) != 1:
            raise ValueError(f"the layers' frame periods differ: {sorted(periods)}")
        for rid, clip in clips.items():
            if not clip.frames or not is_keyframe(clip.frames[0]):
                raise ValueError(f"layer {rid}: the clip must start with a VP8 keyframe")
        self.clips = dict(clips)
        self.frame_period = periods.pop()
        self._positions = dict.fromkeys(clips, -1)
        self._index = -1
        self._start = 0.0

    @property
    def rids(self) -> tuple[str, ...]:
        return tuple(self.clips)

    async def recv(self) -> av.VideoFrame:
        raise MediaStreamError("pre-encoded layers are read by the simulcast publisher")

    async def next_frames(self, wanted: Mapping[str, bool]) -> tuple[int, dict[str, bytes]]:
        if self.readyState != "live":
            raise MediaStreamError
        self._index += 1
        if self._index == 0:
            self._start = time.monotonic()
        else:
            delay = self._start + self._index * self.frame_period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        frames: dict[str, bytes] = {}
        for rid, position in self._positions.items():
            clip = self.clips[rid].frames
            if rid not in wanted:
                self._positions[rid] = -1  # when turned on again, it starts at its keyframe
                continue
            position = 0 if wanted[rid] or position < 0 else (position + 1) % len(clip)
            self._positions[rid] = position
            frames[rid] = clip[position]
        return round(self._index * self.frame_period * VIDEO_CLOCK_RATE), frames

    def close(self) -> None:
        self.stop()
