"""A subscriber connection lets go of a removed down-track it used for probe padding.

Regression: ``MediaConnection._padder`` kept the down-track it last padded on after the track
ended. The down-track holds the publisher's layer and the layer its connection, so a publisher
that left stayed alive (OpenSSL, aioice, buffers) as long as the subscriber stayed, and through
the departed connection's own padder the one before it: in a soak of 553 visitors the server
grew 0.55 MB per visitor, and with 15 overlapping visitors all 15 were alive after they left
(found by the census of benchmarks/heap.py; 0 after the fix).
"""

from __future__ import annotations

from sfu.config import MediaConfig
from sfu.media.connection import MediaConnection
from sfu.media.downtrack import DownTrack, OutgoingStream
from tests.unit.media_doubles import RecordingSink, publisher_receiver, subscriber_params


async def test_a_removed_padding_down_track_is_let_go() -> None:
    subscriber = MediaConnection(MediaConfig(), lambda reason: None, lambda: None)
    publisher = MediaConnection(MediaConfig(), lambda reason: None, lambda: None)
    try:
        receiver = publisher_receiver(publisher)
        down_track = DownTrack(receiver, OutgoingStream(subscriber_params(), 1, 1), RecordingSink())
        receiver.add_down_track(down_track)
        subscriber.add_down_track(down_track)
        subscriber._padder = down_track  # what a probe padding on it leaves behind
        # the publisher leaves: its track ends and the subscriber drops the down-track
        receiver.remove_down_track(down_track)
        subscriber.remove_down_track(down_track)
        assert subscriber._padder is None
        # and a connection that closes keeps none either
        subscriber.add_down_track(down_track)
        subscriber._padder = down_track
        await subscriber.close()
        assert subscriber._padder is None
    finally:
        await publisher.close()
        await subscriber.close()
