"""Synthetic media for tests and load: marker-coloured video, sine-tone audio, and their analysis.

A :class:`MarkerVideoTrack` sends one flat colour and a :class:`ToneAudioTrack` one sine tone, so a
receiver can tell which publisher a decoded frame came from (:func:`frame_color` +
:func:`closest_color`, :func:`dominant_frequency`) after real VP8/Opus compression.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import av
import numpy as np
import numpy.typing as npt
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.video.plane import VideoPlane

RGB = tuple[int, int, int]
FloatArray = npt.NDArray[np.float64]

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_PTIME = 0.020

#: Marker colours far apart in RGB and in YUV (saturated primaries and secondaries).
PALETTE: tuple[RGB, ...] = (
    (255, 0, 0),  # red
    (0, 255, 0),  # green
    (0, 0, 255),  # blue
    (255, 255, 0),  # yellow
    (255, 0, 255),  # magenta
    (0, 255, 255),  # cyan
    (255, 255, 255),  # white
    (0, 0, 0),  # black
)

#: Tone frequencies (Hz) that are not harmonics of one another.
TONES: tuple[float, ...] = (440.0, 1000.0, 1700.0, 2500.0, 3300.0, 620.0)


# --- colour conversion (ITU-R BT.601, limited range, as libvpx and swscale assume) ---


def rgb_to_yuv(rgb: RGB) -> tuple[int, int, int]:
    r, g, b = (c / 255.0 for c in rgb)
    y = 16.0 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128.0 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128.0 + 112.0 * r - 93.786 * g - 18.214 * b
    return (round(y), round(u), round(v))


def yuv_to_rgb(y: float, u: float, v: float) -> RGB:
    c = (y - 16.0) * 255.0 / 219.0
    d = (u - 128.0) * 255.0 / 224.0
    e = (v - 128.0) * 255.0 / 224.0
    r = c + 1.402 * e
    g = c - 0.344136 * d - 0.714136 * e
    b = c + 1.772 * d
    return (_clip8(r), _clip8(g), _clip8(b))


def _clip8(value: float) -> int:
    return max(0, min(255, round(value)))


def marker_frame(color: RGB, width: int, height: int) -> av.VideoFrame:
    """A yuv420p frame of one flat colour (``width`` and ``height`` must be even)."""
    if width % 2 or height % 2 or width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive and even, got {width}x{height}")
    y, u, v = rgb_to_yuv(color)
    luma = width * height
    chroma = luma // 4
    # pyav's yuv420p layout: the y plane, then the u and v planes, in (height * 3/2) rows of width
    flat = np.empty(luma + 2 * chroma, dtype=np.uint8)
    flat[:luma] = y
    flat[luma : luma + chroma] = u
    flat[luma + chroma :] = v
    return av.VideoFrame.from_ndarray(flat.reshape(height * 3 // 2, width), format="yuv420p")


def _plane_mean(plane: VideoPlane, fraction: float) -> float:
    rows = np.frombuffer(bytes(plane), dtype=np.uint8).reshape(-1, plane.line_size)
    pixels = rows[: plane.height, : plane.width]
    dy = int(plane.height * (1.0 - fraction) / 2)
    dx = int(plane.width * (1.0 - fraction) / 2)
    centre = pixels[dy : plane.height - dy, dx : plane.width - dx]
    return float(centre.mean())


def frame_color(frame: av.VideoFrame, fraction: float = 0.5) -> RGB:
    """Mean RGB of the centre region (``fraction`` of each dimension) of a frame."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    y, u, v = (_plane_mean(plane, fraction) for plane in frame.planes[:3])
    return yuv_to_rgb(y, u, v)


def closest_color(rgb: Sequence[int], palette: Sequence[Sequence[int]] = PALETTE) -> int:
    """Index of the palette colour nearest to ``rgb`` (Euclidean distance in RGB)."""
    if not palette:
        raise ValueError("empty palette")
    distances = [sum((a - b) ** 2 for a, b in zip(rgb, ref, strict=True)) for ref in palette]
    return distances.index(min(distances))


# --- audio analysis ---


def audio_samples(frame: av.AudioFrame) -> FloatArray:
    """The samples of an audio frame as mono float64 in [-1, 1] (channels averaged)."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = data.astype(np.float64).mean(axis=0)
    else:
        mono = data.astype(np.float64).reshape(-1, channels).mean(axis=1)
    if frame.format.name.startswith("s16"):
        mono /= 32768.0
    elif frame.format.name.startswith("s32"):
        mono /= 2147483648.0
    result: FloatArray = mono
    return result


def dominant_frequency(samples: npt.ArrayLike, sample_rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak, refined by parabolic interpolation."""
    signal = np.asarray(samples, dtype=np.float64)
    if signal.ndim > 1:
        signal = signal.mean(axis=0 if signal.shape[0] < signal.shape[-1] else 1)
    if signal.size < 16:
        raise ValueError(f"need at least 16 samples, got {signal.size}")
    signal = (signal - signal.mean()) * np.hanning(signal.size)
    spectrum = np.abs(np.fft.rfft(signal))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    offset = 0.0
    if 0 < peak < spectrum.size - 1:
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = left - 2.0 * centre + right
        if denominator != 0.0:
            offset = 0.5 * (left - right) / denominator
    return float((peak + offset) * sample_rate / signal.size)


# --- tracks ---


class _Pacer:
    """Real-time pacing of frame ``n`` at ``n * period`` after the first frame."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.index = -1
        self._start = 0.0

    async def next(self) -> int:
        self.index += 1
        if self.index == 0:
            self._start = time.monotonic()
        else:
            delay = self._start + self.index * self.period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return self.index


class MarkerVideoTrack(MediaStreamTrack):
    """A video track of flat frames in one marker colour; ``color`` may be changed while live."""

    kind = "video"

    def __init__(self, color: RGB, width: int = 320, height: int = 240, fps: float = 30) -> None:
        super().__init__()
        if fps <= 0:
            raise ValueError("fps must be positive")
        marker_frame(color, width, height)  # validates the size
        self.color = color
        self.width = width
        self.height = height
        self.fps = fps
        self._pacer = _Pacer(1.0 / fps)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        return self.make_frame(await self._pacer.next())

    def make_frame(self, index: int) -> av.VideoFrame:
        """Frame number ``index`` of the track, without pacing."""
        frame = marker_frame(self.color, self.width, self.height)
        frame.pts = round(index * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """An audio track of 20 ms s16 frames of a continuous sine tone."""

    kind = "audio"

    def __init__(
        self,
        frequency_hz: float,
        sample_rate: int = 48_000,
        *,
        channels: int = 1,
        amplitude: float = 0.5,
    ) -> None:
        super().__init__()
        if channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        if not 0 < frequency_hz < sample_rate / 2:
            raise ValueError("frequency must be between 0 and the Nyquist frequency")
        self.frequency_hz = frequency_hz
        self.sample_rate = sample_rate
        self.channels = channels
        self.amplitude = amplitude
        self.samples_per_frame = round(sample_rate * AUDIO_PTIME)
        self._pacer = _Pacer(AUDIO_PTIME)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        return self.make_frame(await self._pacer.next())

    def make_frame(self, index: int) -> av.AudioFrame:
        """Frame number ``index`` of the track (20 ms each), without pacing."""
        start = index * self.samples_per_frame
        t = np.arange(start, start + self.samples_per_frame, dtype=np.float64) / self.sample_rate
        wave = self.amplitude * np.sin(2.0 * math.pi * self.frequency_hz * t)
        pcm = np.round(wave * 32767.0).astype(np.int16)
        if self.channels == 2:
            pcm = np.repeat(pcm, 2)
        layout = "mono" if self.channels == 1 else "stereo"
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = self.sample_rate
        frame.pts = start
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        return frame


class FileTracks(NamedTuple):
    player: MediaPlayer
    audio: MediaStreamTrack | None
    video: MediaStreamTrack | None


def file_tracks(path: str, *, loop: bool = False) -> FileTracks:
    """Audio and video tracks read (and paced) from a media file by aiortc's MediaPlayer."""
    player = MediaPlayer(path, loop=loop)
    return FileTracks(player, player.audio, player.video)


# --- probing received tracks ---


@dataclass(frozen=True, slots=True)
class FrameRecord:
    at: float  # time.monotonic() when recv() returned the frame
    pts: int | None
    color: RGB | None = None  # video frames only


@dataclass(slots=True)
class FrameProbe:
    """Reads frames from a (remote) track and records their arrival, colour or samples."""

    track: MediaStreamTrack
    started_at: float = field(default_factory=time.monotonic)
    records: list[FrameRecord] = field(default_factory=list)
    sample_rate: int = 0
    ended: bool = False
    _chunks: list[FloatArray] = field(default_factory=list)

    @property
    def first_frame_at(self) -> float | None:
        return self.records[0].at if self.records else None

    @property
    def colors(self) -> list[RGB]:
        return [r.color for r in self.records if r.color is not None]

    def color_indexes(self, palette: Sequence[RGB] = PALETTE) -> list[int]:
        return [closest_color(c, palette) for c in self.colors]

    def dominant_color_index(self, palette: Sequence[RGB] = PALETTE) -> int | None:
        counts = Counter(self.color_indexes(palette))
        return counts.most_common(1)[0][0] if counts else None

    def samples(self, skip_seconds: float = 0.0) -> FloatArray:
        if not self._chunks:
            return np.zeros(0)
        data = np.concatenate(self._chunks)
        return data[round(skip_seconds * self.sample_rate) :]

    def frequency(self, skip_seconds: float = 0.2) -> float:
        """Dominant frequency of the audio received, ignoring its first ``skip_seconds``."""
        samples = self.samples(skip_seconds)
        if samples.size < 16:
            samples = self.samples()
        return dominant_frequency(samples, self.sample_rate)

    def record(self, frame: av.VideoFrame | av.AudioFrame) -> None:
        now = time.monotonic()
        if isinstance(frame, av.VideoFrame):
            self.records.append(FrameRecord(now, frame.pts, frame_color(frame)))
        else:
            self.sample_rate = frame.sample_rate
            self._chunks.append(audio_samples(frame))
            self.records.append(FrameRecord(now, frame.pts))

    async def run(
        self,
        *,
        duration: float | None = None,
        count: int | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - a probe that times out returns what it got
    ) -> FrameProbe:
        """Read until ``count`` frames, or ``duration`` seconds, or ``timeout`` seconds pass."""
        limit = min(timeout, duration) if duration is not None else timeout
        deadline = time.monotonic() + limit
        while count is None or len(self.records) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                frame = await asyncio.wait_for(self.track.recv(), remaining)
            except TimeoutError:
                break
            except MediaStreamError:
                self.ended = True
                break
            if isinstance(frame, av.VideoFrame | av.AudioFrame):
                self.record(frame)
        return self


async def collect(
    track: MediaStreamTrack,
    *,
    duration: float | None = None,
    count: int | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> FrameProbe:
    """Probe ``track`` for ``count`` frames or ``duration`` seconds (at most ``timeout``)."""
    return await FrameProbe(track).run(duration=duration, count=count, timeout=timeout)


def realtime_vp8_encoder(
    width: int, height: int, bitrate: int, time_base: fractions.Fraction
) -> av.VideoCodecContext:
    """libvpx at a constant ``bitrate``, realtime, no look-ahead, one thread; keyframes only
    when asked for (a frame with ``pict_type`` I) or at the first frame."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = time_base
    codec.bit_rate = bitrate
    codec.gop_size = 1_000_000
    codec.thread_count = 1
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "minrate": str(bitrate),
        "maxrate": str(bitrate),
        "bufsize": str(bitrate),
        "undershoot-pct": "100",
        "overshoot-pct": "15",
        "static-thresh": "1",
    }
    return codec
