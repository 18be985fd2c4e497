"""Load-test media: clips encoded once, looped as av.Packet objects in real time."""

from __future__ import annotations

import fractions

import pytest

from loadtest.media import ClipTrack, EncodedClip, encode_audio, encode_video


def test_video_clip_starts_with_its_only_keyframe() -> None:
    clip = encode_video(64, 48, fps=10, seconds=1.0, bitrate=100_000)
    assert clip.kind == "video"
    assert len(clip.frames) == 10
    assert clip.pts_step == 9000 and clip.time_base == fractions.Fraction(1, 90_000)
    # VP8 frame tag: bit 0 of the first byte is 0 on a keyframe (RFC 6386 §9.1)
    assert [f[0] & 1 for f in clip.frames] == [0] + [1] * 9


def test_audio_clip_packets_are_all_different() -> None:
    clip = encode_audio(seconds=0.4)
    assert clip.kind == "audio"
    assert len(clip.frames) == 20
    assert len(set(clip.frames)) == 20  # matched by payload for the latency
    assert 20_000 < clip.bitrate < 50_000


def _opus_packet_ms(packet: bytes) -> float:
    """Duration of an Opus packet from its TOC byte (RFC 6716 §3.1, §3.2.5)."""
    config, code = packet[0] >> 3, packet[0] & 3
    if config < 12:  # SILK
        frame = (10.0, 20.0, 40.0, 60.0)[config % 4]
    elif config < 16:  # hybrid
        frame = (10.0, 20.0)[config % 2]
    else:  # CELT
        frame = (2.5, 5.0, 10.0, 20.0)[config % 4]
    frames = 1 if code == 0 else 2 if code in (1, 2) else packet[1] & 0x3F
    return frame * frames


def test_audio_clip_of_longer_frames_has_fewer_packets() -> None:
    clip = encode_audio(seconds=0.6, frame_ms=60)
    assert len(clip.frames) == 10
    assert clip.frame_period == 0.06 and clip.pts_step == 2880
    assert {_opus_packet_ms(f) for f in clip.frames} == {60.0}
    with pytest.raises(ValueError):
        encode_audio(frame_ms=30)


@pytest.mark.parametrize("size", [(0, 48), (63, 48)])
def test_video_size_must_be_even(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        encode_video(*size)


async def test_track_loops_and_restarts_at_the_keyframe_on_request() -> None:
    frames = tuple(bytes([i]) * 10 for i in range(3))
    clip = EncodedClip("video", frames, 0.001, 90, fractions.Fraction(1, 90_000))
    track = ClipTrack(clip)
    sent = [bytes(await track.recv()) for _ in range(5)]
    assert sent == [frames[0], frames[1], frames[2], frames[0], frames[1]]
    track.request_keyframe()
    packet = await track.recv()
    assert bytes(packet) == frames[0]
    assert packet.pts == 5 * 90  # timestamps go on
    assert packet.time_base == fractions.Fraction(1, 90_000)
    assert track.keyframes_requested == 1
    track.stop()
