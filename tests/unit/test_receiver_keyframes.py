"""Keyframe requests to a publisher: coalesced, throttled, never lost to an early timer."""

from __future__ import annotations

import pytest

from sfu.api import TrackInfo
from sfu.media.downtrack import SUBSCRIBER_KEYFRAME_INTERVAL, DownTrack, OutgoingStream
from sfu.media.layer import KEYFRAME_RETRY, LayerReceiver
from sfu.media.receiver import TrackReceiver
from sfu.media.reports import PublisherClock

from .media_doubles import (
    RecordingSink,
    Upstream,
    publisher_params,
    subscriber_params,
    vp8_packet,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_receiver(upstream: Upstream, clock: Clock) -> LayerReceiver:
    info = TrackInfo("TR_a", "PA_a", "video")
    params = publisher_params(777)
    return TrackReceiver(info, params, upstream, 0.5, PublisherClock(), clock=clock).layers[0]


@pytest.mark.parametrize(
    ("fire_at", "sent_after_first_fire"),
    [
        (100.5, True),  # on time
        (100.499, False),  # early (uvloop's clock is coarser): re-armed, not dropped
    ],
)
def test_pending_request_survives_an_early_timer(
    fire_at: float, sent_after_first_fire: bool
) -> None:
    upstream, clock = Upstream(), Clock()
    receiver = make_receiver(upstream, clock)
    receiver.request_keyframe(clock.now)  # the first goes out at once
    clock.now = 100.1
    receiver.request_keyframe(clock.now)  # throttled: pending until 100.5
    receiver.request_keyframe(clock.now)  # coalesced with the pending one
    assert upstream.requests == [777]
    assert len(upstream.timers) == 1
    delay, fire = upstream.timers.pop()
    assert delay == pytest.approx(0.4)
    clock.now = fire_at
    fire()
    if sent_after_first_fire:
        assert upstream.requests == [777, 777]
        assert upstream.timers == []
    else:
        assert upstream.requests == [777]
        ((delay, fire_again),) = upstream.timers
        assert 0 < delay <= 0.002
        clock.now = 100.5
        fire_again()
        assert upstream.requests == [777, 777]


def test_a_keyframe_arriving_cancels_the_pending_request() -> None:
    upstream, clock = Upstream(), Clock()
    receiver = make_receiver(upstream, clock)
    receiver.request_keyframe(clock.now)
    clock.now = 100.2
    receiver.request_keyframe(clock.now)
    # a VP8 keyframe: descriptor S=1, payload header P bit clear
    packet = bytes([0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 3, 9]) + bytes([0x10, 0x00, 0, 0]) + b"x" * 20
    receiver.on_rtp(packet, clock.now)
    # a new source's first packet waits for its successor (RFC 3550 §A.1 probation)
    receiver.on_rtp(packet[:2] + bytes([0, 2]) + packet[4:], clock.now)
    ((_, fire),) = upstream.timers
    clock.now = 100.6
    fire()
    assert upstream.requests == [777]


def keyframe_packet(seq: int, keyframe: bool = True) -> bytes:
    return vp8_packet(seq, keyframe=keyframe, ssrc=777)


def test_a_waiting_subscriber_asks_again_until_a_keyframe_comes() -> None:
    """A publisher may ignore a request (libwebrtc does within 300 ms of its last keyframe): a
    subscriber that joined just after the first keyframe waited for ever (a flaky browser test's
    camera at 0 packets for 25 s). While a down-track waits, the request is repeated."""
    upstream, clock = Upstream(), Clock()
    track = TrackReceiver(
        TrackInfo("TR_a", "PA_a", "video"), publisher_params(777), upstream, 0.5,
        PublisherClock(), clock=clock,
    )  # fmt: skip
    layer = track.layers[0]
    for seq in (0, 1):  # the publisher's first keyframe, before anyone subscribes
        layer.on_rtp(keyframe_packet(seq), clock.now)
    sink = RecordingSink()
    track.add_down_track(DownTrack(track, OutgoingStream(subscriber_params(), 500, 9000), sink))
    assert upstream.requests == [777]  # asked at once ... and ignored by the publisher
    for _ in range(3):  # ... so asked again, every KEYFRAME_RETRY, while nothing comes
        ((delay, fire),) = upstream.timers
        upstream.timers.clear()
        assert delay == pytest.approx(KEYFRAME_RETRY)
        clock.now += delay
        layer.on_rtp(keyframe_packet(int(clock.now * 10), keyframe=False), clock.now)
        fire()
    assert upstream.requests == [777] * 4
    layer.on_rtp(keyframe_packet(int(clock.now * 10) + 1), clock.now)
    assert sink.packets  # started on the keyframe
    ((_, fire),) = upstream.timers
    upstream.timers.clear()
    clock.now += KEYFRAME_RETRY
    fire()
    assert upstream.requests == [777] * 4 and upstream.timers == []  # nothing waits: no more


def test_nobody_waiting_means_no_repeated_requests() -> None:
    upstream, clock = Upstream(), Clock()
    layer = make_receiver(upstream, clock)
    layer.request_keyframe(clock.now)
    assert upstream.requests == [777] and upstream.timers == []


def test_one_subscribers_requests_pass_at_most_every_half_second() -> None:
    """A subscriber flooding PLIs would make the publisher send everyone keyframes as often as
    the stream's own throttle (0.5 s here) allows; its own reach the publisher every 0.5 s."""
    upstream, clock = Upstream(), Clock()
    track = TrackReceiver(
        TrackInfo("TR_a", "PA_a", "video"), publisher_params(777), upstream, 0.1,
        PublisherClock(), clock=clock,
    )  # fmt: skip
    layer = track.layers[0]
    sink = RecordingSink()
    down_track = DownTrack(track, OutgoingStream(subscriber_params(), 500, 9000), sink, clock=clock)
    track.add_down_track(down_track)
    for seq in (0, 1):
        layer.on_rtp(keyframe_packet(seq), clock.now)
    assert sink.packets
    upstream.requests.clear()
    passed = []
    for tick in range(100):  # a PLI every 10 ms for a second
        clock.now = 200.0 + tick / 100
        before = len(upstream.requests) + len(upstream.timers)
        down_track.on_keyframe_request()
        passed.append(len(upstream.requests) + len(upstream.timers) > before)
    assert [tick for tick, p in enumerate(passed) if p] == [0, 50]
    assert SUBSCRIBER_KEYFRAME_INTERVAL == 0.5
