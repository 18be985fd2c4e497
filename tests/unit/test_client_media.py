"""sfu_client.media: marker colours and tones survive real VP8 / Opus compression."""

from __future__ import annotations

import asyncio
import math
import time

import av
import numpy as np
import pytest
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, vp8_depayload
from aiortc.jitterbuffer import JitterFrame

from sfu_client.media import (
    PALETTE,
    TONES,
    FrameProbe,
    MarkerVideoTrack,
    ToneAudioTrack,
    audio_samples,
    closest_color,
    collect,
    dominant_frequency,
    frame_color,
    marker_frame,
    rgb_to_yuv,
    yuv_to_rgb,
)


def vp8_round_trip(frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
    """Encode with aiortc's VP8 encoder, depayload, decode; one decoded frame per input."""
    encoder, decoder = Vp8Encoder(), Vp8Decoder()
    decoded: list[av.VideoFrame] = []
    for frame in frames:
        payloads, timestamp = encoder.encode(frame)
        data = b"".join(vp8_depayload(p) for p in payloads)
        out = decoder.decode(JitterFrame(data=data, timestamp=timestamp))
        decoded.extend(f for f in out if isinstance(f, av.VideoFrame))
    return decoded


def test_palette_round_trips_through_vp8() -> None:
    # one continuous stream that changes colour every 8 frames, as a reused m-line would
    track = MarkerVideoTrack(PALETTE[0], width=320, height=240)
    frames = []
    for index in range(8 * len(PALETTE)):
        track.color = PALETTE[index // 8]
        frames.append(track.make_frame(index))

    decoded = vp8_round_trip(frames)

    assert len(decoded) == len(frames)
    for index, frame in enumerate(decoded):
        if index % 8 < 2:  # the encoder may need a frame or two to converge after a change
            continue
        rgb = frame_color(frame)
        expected = index // 8
        assert closest_color(rgb) == expected, (index, rgb, PALETTE[expected])
        assert max(abs(a - b) for a, b in zip(rgb, PALETTE[expected], strict=True)) < 40


@pytest.mark.parametrize("color", PALETTE)
def test_first_keyframe_already_has_the_colour(color: tuple[int, int, int]) -> None:
    (decoded,) = vp8_round_trip([marker_frame(color, 160, 120)])
    assert closest_color(frame_color(decoded)) == PALETTE.index(color)


def test_palette_colours_are_far_apart_in_yuv() -> None:
    yuv = [np.array(rgb_to_yuv(c), dtype=float) for c in PALETTE]
    nearest = min(float(np.linalg.norm(a - b)) for i, a in enumerate(yuv) for b in yuv[i + 1 :])
    assert nearest > 80


@pytest.mark.parametrize("color", PALETTE)
def test_yuv_conversion_round_trip(color: tuple[int, int, int]) -> None:
    rgb = yuv_to_rgb(*rgb_to_yuv(color))
    assert max(abs(a - b) for a, b in zip(rgb, color, strict=True)) <= 2


def test_frame_color_reads_the_centre() -> None:
    frame = marker_frame((0, 0, 255), 64, 48)
    assert closest_color(frame_color(frame)) == 2
    rgb_frame = frame.reformat(format="rgb24")
    assert closest_color(frame_color(rgb_frame)) == 2


@pytest.mark.parametrize(
    ("rgb", "expected"),
    [
        ((250, 10, 5), 0),
        ((30, 200, 40), 1),
        ((20, 20, 230), 2),
        ((230, 220, 30), 3),
        ((200, 40, 210), 4),
        ((40, 210, 220), 5),
        ((240, 240, 240), 6),
        ((12, 8, 20), 7),
        ((128, 0, 0), 0),
        ((100, 100, 100), 7),
        ((160, 160, 160), 6),
    ],
)
def test_closest_color(rgb: tuple[int, int, int], expected: int) -> None:
    assert closest_color(rgb) == expected


def test_closest_color_custom_palette_and_errors() -> None:
    assert closest_color((10, 10, 10), [(255, 255, 255), (0, 0, 0)]) == 1
    with pytest.raises(ValueError):
        closest_color((0, 0, 0), [])


def test_marker_frame_rejects_odd_sizes() -> None:
    with pytest.raises(ValueError):
        marker_frame((0, 0, 0), 321, 240)


@pytest.mark.parametrize("frequency", [300.0, 440.0, 1000.0, 1700.0, 3300.0])
def test_dominant_frequency_of_a_sine(frequency: float) -> None:
    sample_rate = 48_000
    t = np.arange(sample_rate // 2) / sample_rate
    noise = np.random.default_rng(1).normal(0.0, 0.05, t.size)
    samples = 0.3 * np.sin(2 * math.pi * frequency * t) + noise
    assert dominant_frequency(samples, sample_rate) == pytest.approx(frequency, abs=2.0)


def test_tone_frames() -> None:
    track = ToneAudioTrack(440.0, channels=2)
    frames = [track.make_frame(i) for i in range(3)]
    assert [f.pts for f in frames] == [0, 960, 1920]
    assert all(f.samples == 960 and f.sample_rate == 48_000 for f in frames)
    assert frames[0].layout.name == "stereo"
    assert frames[0].time_base == pytest.approx(1 / 48_000)
    samples = np.concatenate([audio_samples(f) for f in frames])
    assert samples.size == 3 * 960
    assert np.abs(samples).max() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("frequency", TONES[:3])
def test_tone_frequency_survives_opus(frequency: float) -> None:
    track = ToneAudioTrack(frequency)
    encoder, decoder = OpusEncoder(), OpusDecoder()
    decoded: list[np.ndarray] = []
    sample_rate = 0
    for index in range(50):  # one second
        payloads, timestamp = encoder.encode(track.make_frame(index))
        for payload in payloads:
            for frame in decoder.decode(JitterFrame(data=payload, timestamp=timestamp)):
                assert isinstance(frame, av.AudioFrame)
                sample_rate = frame.sample_rate
                decoded.append(audio_samples(frame))
    samples = np.concatenate(decoded)[sample_rate // 10 :]  # skip the codec's start-up
    assert samples.size > sample_rate // 2
    assert dominant_frequency(samples, sample_rate) == pytest.approx(frequency, rel=0.01)


async def test_tracks_pace_in_real_time() -> None:
    video = MarkerVideoTrack(PALETTE[1], 64, 48, fps=50)
    audio = ToneAudioTrack(1000.0)
    start = time.monotonic()
    video_probe, audio_probe = await asyncio.gather(
        collect(video, count=11), collect(audio, count=11)
    )
    elapsed = time.monotonic() - start
    assert 0.18 < elapsed < 1.0  # 10 intervals of 20 ms after the first frame
    assert [r.pts for r in video_probe.records][:3] == [0, 1800, 3600]
    assert video_probe.dominant_color_index() == 1
    assert audio_probe.sample_rate == 48_000
    assert audio_probe.frequency(skip_seconds=0) == pytest.approx(1000.0, rel=0.01)


async def test_probe_stops_on_duration_and_on_ended_tracks() -> None:
    track = MarkerVideoTrack(PALETTE[3], 64, 48, fps=20)
    probe = await FrameProbe(track).run(duration=0.3)
    assert 4 <= len(probe.records) <= 8
    assert probe.first_frame_at is not None and probe.first_frame_at >= probe.started_at
    track.stop()
    ended = await collect(track, count=5, timeout=1.0)
    assert ended.ended and not ended.records
