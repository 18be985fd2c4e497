"""The receiver-driven ceiling: what a publisher is asked to send at most (REMB), and the
allowances of its subscribers' down-tracks it comes from (sfu.media.allocation)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sfu.api import TrackInfo, TrackSettings
from sfu.config import MediaConfig
from sfu.media.allocation import SubscriberAllocation
from sfu.media.connection import MIN_PUBLISHER_CEILING, MediaConnection
from sfu.media.downtrack import DownTrack, OutgoingStream
from sfu.media.layer_meter import Layer
from sfu.media.receiver import TrackReceiver
from tests.unit.media_doubles import RecordingSink, publisher_receiver, subscriber_params

MAXIMUM = MediaConfig().publisher_max_bitrate


@pytest.fixture
async def connection() -> AsyncIterator[MediaConnection]:
    connection = MediaConnection(MediaConfig(), lambda reason: None, lambda: None)
    yield connection
    await connection.close()


def down_track(receiver: TrackReceiver, allowance: float | None) -> DownTrack:
    track = DownTrack(receiver, OutgoingStream(subscriber_params(), 1, 1), RecordingSink())
    track.allowance = allowance
    receiver.add_down_track(track)
    return track


# the allowances of one single-layer camera's subscribers -> the ceiling
CEILINGS = [
    ([], MAXIMUM),  # nobody receives it: nothing to fit
    ([None], MAXIMUM),  # a subscriber whose link gives no estimate
    ([300e3, None], MAXIMUM),
    ([300e3, 800e3], 800_000),  # the best-placed subscriber decides
    ([20e3], MIN_PUBLISHER_CEILING),
    ([9e6], MAXIMUM),
]


@pytest.mark.parametrize(("allowances", "expected"), CEILINGS)
async def test_ceiling(
    connection: MediaConnection, allowances: list[float | None], expected: int
) -> None:
    receiver = publisher_receiver(connection)
    for allowance in allowances:
        down_track(receiver, allowance)
    assert connection.publisher_ceiling() == expected


async def test_the_allowance_is_what_the_others_leave(connection: MediaConnection) -> None:
    a, b = publisher_receiver(connection), publisher_receiver(connection)
    b.info = TrackInfo("TR_y", "PA_x", "video")
    for receiver, bitrate in ((a, 500e3), (b, 300e3)):
        assert receiver.publisher_side is not None
        receiver.publisher_side.ranked = (Layer("", bitrate),)
    tracks = [down_track(a, None), down_track(b, None)]
    allocation = SubscriberAllocation(lambda track_id: TrackSettings())
    allocation.run(tracks, 0.0, 1_000_000)
    assert [t.allowance for t in tracks] == [700_000, 500_000]  # 1M less the other's layer
    allocation.run(tracks, 1.0, 600_000)  # b's 300k no longer fits after a's 500k
    assert tracks[1].choice is not None and tracks[1].choice.starved  # forwarded for now
    assert [t.allowance for t in tracks] == [300_000, 100_000]
    allocation.run(tracks, 3.0, 600_000)  # and paused once that lasted
    assert tracks[1].choice is not None and tracks[1].choice.paused
    assert [t.allowance for t in tracks] == [600_000, 100_000]
    allocation.run(tracks, 2.0, None)
    assert [t.allowance for t in tracks] == [None, None]
