"""``congestion_control``: on, a subscriber's estimate is its video budget; off, no limit."""

from __future__ import annotations

import pytest

from sfu.bwe.estimator import BandwidthEstimator
from sfu.bwe.feedback import FeedbackSummary
from sfu.config import MediaConfig
from sfu.media.bandwidth import SubscriberBandwidth
from sfu.media.connection import MediaConnection
from sfu.media.downtrack import DownTrack, OutgoingStream
from sfu.media.layer_meter import Layer
from tests.unit.media_doubles import RecordingSink, publisher_receiver, subscriber_params


@pytest.mark.parametrize(("controlled", "allowance"), [(True, 1_000_000), (False, None)])
async def test_the_estimate_is_the_budget_only_under_congestion_control(
    controlled: bool, allowance: float | None
) -> None:
    publisher = MediaConnection(MediaConfig(), lambda reason: None, lambda: None)
    subscriber = MediaConnection(
        MediaConfig(congestion_control=controlled), lambda reason: None, lambda: None
    )
    try:
        receiver = publisher_receiver(publisher)
        assert receiver.publisher_side is not None
        receiver.publisher_side.ranked = (Layer("", 300e3),)
        down_track = DownTrack(receiver, OutgoingStream(subscriber_params(), 1, 1), RecordingSink())
        receiver.add_down_track(down_track)
        subscriber.add_down_track(down_track)
        subscriber.bandwidth.negotiated = True  # the estimate's starting 1 Mbit/s counts
        subscriber.choose_layers(10.0)
        assert down_track.allowance == allowance
    finally:
        await publisher.close()
        await subscriber.close()


class SteppedEstimator(BandwidthEstimator):
    """An estimate the test sets; transport-cc from the first feedback on."""

    def __init__(self) -> None:
        super().__init__(initial_probing=False)
        self.value = 1_000_000.0

    @property
    def target(self) -> float:
        return self.value


async def test_a_fall_of_the_estimate_is_acted_on_before_the_next_tick() -> None:
    publisher = MediaConnection(MediaConfig(), lambda reason: None, lambda: None)
    subscriber = MediaConnection(MediaConfig(), lambda reason: None, lambda: None)
    estimator = SteppedEstimator()
    subscriber.bandwidth = SubscriberBandwidth(estimator=estimator)
    try:
        receiver = publisher_receiver(publisher)
        assert receiver.publisher_side is not None
        receiver.publisher_side.ranked = (Layer("", 300e3),)
        down_track = DownTrack(receiver, OutgoingStream(subscriber_params(), 1, 1), RecordingSink())
        receiver.add_down_track(down_track)
        subscriber.add_down_track(down_track)
        subscriber.bandwidth.negotiated = True
        subscriber.choose_layers(10.0)
        assert down_track.choice is not None and not down_track.choice.starved
        estimator.value = 200_000  # a feedback message says the link took less
        subscriber._on_feedback(FeedbackSummary(), 10.05)
        assert down_track.choice.starved, "re-chosen at once, not at the next tick"
        estimator.value = 190_000  # a little less again: no new run for that
        choice = down_track.choice
        subscriber._on_feedback(FeedbackSummary(), 10.1)
        assert down_track.choice is choice
    finally:
        await publisher.close()
        await subscriber.close()
