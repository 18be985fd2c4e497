"""Media for load clients: encoded once when the run starts, then sent as packets.

aiortc packetizes an ``av.Packet`` a track returns without encoding it, so every publisher of a
run loops the same few seconds of VP8 and Opus for the price of encoding them once. The video is a
textured pattern that moves (so the encoder spends a realistic bitrate on it) starting with the
clip's only keyframe; the audio is a tone with a little noise, so that no two Opus packets of the
clip are alike (the end-to-end latency is matched by payload, see ``loadtest.probe``).

A subscriber that needs a keyframe (the SFU forwards its PLI) gets one soon: the track restarts
the clip at its keyframe on the next frame. Timestamps keep increasing across loops and restarts.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.stream import Stream

from sfu.api import Kind
from sfu_client.media import realtime_vp8_encoder

AUDIO_RATE = 48_000
AUDIO_FRAME_MS = (10, 20, 40, 60)
VIDEO_CLOCK = 90_000


@dataclass(frozen=True, slots=True)
class EncodedClip:
    """Encoded frames played in a loop; frame 0 is a keyframe (for video)."""

    kind: Kind
    frames: tuple[bytes, ...]
    frame_period: float  # seconds between frames
    pts_step: int  # pts increment per frame, in ``time_base``
    time_base: fractions.Fraction

    @property
    def bitrate(self) -> float:
        """Bits per second of the clip's payloads."""
        return sum(len(f) for f in self.frames) * 8 / (len(self.frames) * self.frame_period)


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    """A blocky, slightly smoothed luma pattern twice the frame size (so it can scroll)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(16, 236, (height // 8 + 1, width // 4 + 1)).astype(np.float64)
    texture = np.kron(blocks, np.ones((16, 8)))
    texture = (
        texture + np.roll(texture, 4, 0) + np.roll(texture, 4, 1) + np.roll(texture, 4, (0, 1))
    ) / 4
    return texture.astype(np.uint8)


def encode_video(
    width: int = 320, height: int = 240, fps: int = 30, seconds: float = 3.0, bitrate: int = 300_000
) -> EncodedClip:
    """``seconds`` of VP8 at ``bitrate`` (libvpx CBR, realtime), one keyframe at the start."""
    if width % 2 or height % 2 or width <= 0 or height <= 0:
        raise ValueError(f"video size must be positive and even, got {width}x{height}")
    codec = realtime_vp8_encoder(width, height, bitrate, fractions.Fraction(1, fps))
    codec.framerate = fractions.Fraction(fps)  # no keyframe but the first
    texture = _texture(height * 2, width * 2, seed=1)
    luma = width * height
    planes = np.empty(luma * 3 // 2, dtype=np.uint8)
    planes[luma : luma * 5 // 4] = 100
    planes[luma * 5 // 4 :] = 150
    count = max(1, round(seconds * fps))
    frames: list[bytes] = []
    for index in range(count):
        planes[:luma] = np.roll(texture, (2 * index, 3 * index), axis=(0, 1))[
            :height, :width
        ].ravel()
        frame = av.VideoFrame.from_ndarray(planes.reshape(height * 3 // 2, width), format="yuv420p")
        frame.pts = index
        frames.extend(bytes(p) for p in codec.encode(frame))
    frames.extend(bytes(p) for p in codec.encode(None))
    return EncodedClip(
        "video",
        tuple(frames[:count]),
        1.0 / fps,
        round(VIDEO_CLOCK / fps),
        fractions.Fraction(1, VIDEO_CLOCK),
    )


def encode_audio(
    seconds: float = 2.0, bitrate: int = 32_000, tone_hz: float = 441.3, frame_ms: int = 20
) -> EncodedClip:
    """``seconds`` of mono Opus in ``frame_ms`` packets (RFC 6716 §2.1.4: 10 to 60 ms; WebRTC
    sends 20): a tone with a little noise. Longer frames mean fewer packets to forward."""
    if frame_ms not in AUDIO_FRAME_MS:
        raise ValueError(f"Opus frames are {', '.join(map(str, AUDIO_FRAME_MS))} ms")
    samples = AUDIO_RATE * frame_ms // 1000
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = AUDIO_RATE, "mono", "s16"
    codec.bit_rate = bitrate
    codec.options = {"frame_duration": str(frame_ms)}
    rng = np.random.default_rng(2)
    count = max(1, round(seconds * 1000 / frame_ms))
    packets: list[bytes] = []
    for index in range(count):
        t = np.arange(index * samples, (index + 1) * samples) / AUDIO_RATE
        wave = 0.4 * np.sin(2 * math.pi * tone_hz * t) + 0.02 * rng.standard_normal(samples)
        pcm = np.round(wave * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = index * samples
        packets.extend(bytes(p) for p in codec.encode(frame))
    packets.extend(bytes(p) for p in codec.encode(None))
    return EncodedClip(
        "audio",
        tuple(packets[:count]),
        samples / AUDIO_RATE,
        samples,
        fractions.Fraction(1, AUDIO_RATE),
    )


class ClipTrack(MediaStreamTrack):
    """A track that plays an :class:`EncodedClip` in real time, as ``av.Packet`` objects."""

    def __init__(self, clip: EncodedClip) -> None:
        super().__init__()
        self.kind = clip.kind
        self.clip = clip
        self.keyframes_requested = 0
        self._index = -1  # frames sent
        self._position = -1  # in the clip
        self._restart = False
        self._start = 0.0

    def request_keyframe(self) -> None:
        """Send the clip's keyframe next (video)."""
        if self.clip.kind == "video":
            self.keyframes_requested += 1
            self._restart = True

    async def recv(self) -> av.Packet[Stream]:
        if self.readyState != "live":
            raise MediaStreamError
        self._index += 1
        if self._index == 0:
            self._start = time.monotonic()
        else:
            delay = self._start + self._index * self.clip.frame_period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if self._restart:
            self._restart = False
            self._position = 0
        else:
            self._position = (self._position + 1) % len(self.clip.frames)
        packet = av.Packet(self.clip.frames[self._position])
        packet.pts = self._index * self.clip.pts_step
        packet.time_base = self.clip.time_base
        return packet
