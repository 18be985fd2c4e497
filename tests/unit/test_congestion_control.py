"""``congestion_control``: on, a subscriber's estimate is its video budget; off, no limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest

from sfu.bwe.estimator import BandwidthEstimator
from sfu.bwe.feedback import FeedbackSummary
from sfu.config import MediaConfig
from sfu.media.bandwidth import SubscriberBandwidth
from sfu.media.connection import MediaConnection
from sfu.media.downtrack import DownTrack, OutgoingStream
from sfu.media.layer_meter import Layer
from tests.unit.media_doubles import RecordingSink, publisher_receiver, subscriber_params


@asynccontextmanager
async def subscribed(
    config: MediaConfig, bandwidth: Callable[[], SubscriberBandwidth] | None = None
) -> AsyncIterator[tuple[MediaConnection, DownTrack]]:
    """A subscriber connection receiving one single-layer 300 kbit/s video track, whose
    estimate counts from the start (as where transport-cc or REMB is negotiated)."""
    publisher = MediaConnection(MediaConfig(), lambda reason: None, lambda: None)
    subscriber = MediaConnection(config, lambda reason: None, lambda: None)
    if bandwidth is not None:
        subscriber.bandwidth = bandwidth()
    try:
        receiver = publisher_receiver(publisher)
        assert receiver.publisher_side is not None
        receiver.publisher_side.ranked = (Layer("", 300e3),)
        down_track = DownTrack(receiver, OutgoingStream(subscriber_params(), 1, 1), RecordingSink())
        receiver.add_down_track(down_track)
        subscriber.add_down_track(down_track)
        subscriber.bandwidth.negotiated = True
        yield subscriber, down_track
    finally:
        await publisher.close()
        await subscriber.close()


@pytest.mark.parametrize(("controlled", "allowance"), [(True, 1_000_000), (False, None)])
async def test_the_estimate_is_the_budget_only_under_congestion_control(
    controlled: bool, allowance: float | None
) -> None:
    async with subscribed(MediaConfig(congestion_control=controlled)) as (subscriber, track):
        subscriber.choose_layers(10.0)  # the estimate's starting 1 Mbit/s
        assert track.allowance == allowance


class SteppedEstimator(BandwidthEstimator):
    """An estimate the test sets; transport-cc from the first feedback on."""

    def __init__(self) -> None:
        super().__init__(initial_probing=False)
        self.value = 1_000_000.0

    @property
    def target(self) -> float:
        return self.value


async def test_a_fall_of_the_estimate_is_acted_on_before_the_next_tick() -> None:
    estimator = SteppedEstimator()
    bandwidth = partial(SubscriberBandwidth, estimator=estimator)
    async with subscribed(MediaConfig(), bandwidth) as (subscriber, track):
        subscriber.choose_layers(10.0)
        assert track.choice is not None and not track.choice.starved
        estimator.value = 200_000  # a feedback message says the link took less
        subscriber._on_feedback(FeedbackSummary(), 10.05)
        assert track.choice.starved, "re-chosen at once, not at the next tick"
        estimator.value = 190_000  # a little less again: no new run for that
        choice = track.choice
        subscriber._on_feedback(FeedbackSummary(), 10.1)
        assert track.choice is choice
