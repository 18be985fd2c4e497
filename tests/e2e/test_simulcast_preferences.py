"""Subscribers with different wishes for one simulcast publisher, through the real server.

One Python publisher sends a marker-coloured source as three VP8 layers (80x45, 160x90,
320x180). Three subscribers ask for the smallest layer, for a 150-pixel-wide tile and for the
best; each decodes frames of its layer only. Then they swap wishes, and a fourth joins late
(churn before the feature): each switches, and from its first frame of the new layer on decodes
only that layer's frames, in the publisher's colour, at the publisher's frame rate (a frame the
decoder could not decode — a switch that broke the stream — would leave a hole in that rate).
A subscriber that pauses gets nothing, and resumes at the layer it asked for.
"""

from __future__ import annotations

import asyncio
import time

import av
import pytest

from sfu_client import PALETTE, MarkerVideoTrack, RemoteTrack, SfuClient, closest_color, frame_color

from .conftest import ClientFactory

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT, FPS = 320, 180, 15
SMALL, MEDIUM, LARGE = (80, 45), (160, 90), (320, 180)
MEDIA_TIMEOUT = 30.0
FRAMES = 15  # frames of the new layer each subscriber must decode after a switch
COLOUR = 4


async def decode_layer(remote: RemoteTrack, size: tuple[int, int]) -> list[tuple[int, int]]:
    """Decode until FRAMES frames of ``size`` came after the first; return every size decoded.

    Every frame from the first of ``size`` on must be of ``size`` and in the publisher's colour,
    and they must keep the publisher's pace (FPS): a broken switch shows as a gap.
    """
    sizes: list[tuple[int, int]] = []
    arrivals: list[float] = []
    deadline = time.monotonic() + MEDIA_TIMEOUT
    while len(arrivals) < FRAMES:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {FRAMES} frames of {size} within {MEDIA_TIMEOUT} s: {sizes}"
        frame = await asyncio.wait_for(remote.track.recv(), remaining)
        assert isinstance(frame, av.VideoFrame)
        sizes.append((frame.width, frame.height))
        if arrivals or sizes[-1] == size:
            assert sizes[-1] == size, f"a frame of another layer after the switch: {sizes}"
            arrivals.append(time.monotonic())
            if len(arrivals) > 2:  # the first frames after a keyframe may still converge
                assert closest_color(frame_color(frame)) == COLOUR
    span = arrivals[-1] - arrivals[0]
    # FRAMES frames at FPS take (FRAMES - 1) / FPS s; a lost frame or two would not double it
    assert span < 2 * (FRAMES - 1) / FPS + 1.0, f"frames of {size} came too slowly: {span:.2f} s"
    return sizes


async def subscribe(
    make_client: ClientFactory, room: str, name: str, publisher_id: str
) -> tuple[SfuClient, RemoteTrack]:
    client = await make_client(room, name)
    remote = await client.wait_for_track(publisher_id, "video", MEDIA_TIMEOUT)
    return client, remote


async def test_each_subscriber_gets_the_layer_it_asks_for_and_switches_cleanly(
    make_client: ClientFactory, room: str
) -> None:
    publisher = await make_client(room, "publisher")
    local = await publisher.publish_simulcast(
        MarkerVideoTrack(PALETTE[COLOUR], WIDTH, HEIGHT, FPS), fps=FPS
    )
    assert publisher.participant_id is not None
    track_id = local.track_id
    small, small_track = await subscribe(make_client, room, "small", publisher.participant_id)
    tile, tile_track = await subscribe(make_client, room, "tile", publisher.participant_id)
    best, best_track = await subscribe(make_client, room, "best", publisher.participant_id)
    await small.set_track_settings([track_id], max_layer=0)
    await tile.set_track_settings([track_id], max_width=150, max_height=80)
    await asyncio.gather(
        decode_layer(small_track, SMALL),
        decode_layer(tile_track, MEDIUM),
        decode_layer(best_track, LARGE),
    )

    # they swap wishes, and a late joiner asks for the middle layer by index
    await small.set_track_settings([track_id])
    await tile.set_track_settings([track_id], max_layer=0)
    await best.set_track_settings([track_id], max_width=100)
    late, late_track = await subscribe(make_client, room, "late", publisher.participant_id)
    await late.set_track_settings([track_id], max_layer=1)
    await asyncio.gather(
        decode_layer(small_track, LARGE),
        decode_layer(tile_track, SMALL),
        decode_layer(best_track, MEDIUM),
        decode_layer(late_track, MEDIUM),
    )

    # paused: nothing arrives; resumed: the layer it asked for before the pause is not kept
    await small.set_track_settings([track_id], paused=True)
    await asyncio.sleep(0.5)
    small_track.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(small_track.track.recv(), 2.0)
    await small.set_track_settings([track_id], max_layer=1)
    await decode_layer(small_track, MEDIUM)
    for client in (publisher, small, tile, best, late):
        assert not client.errors, client.errors


async def test_a_layer_that_stops_arriving_makes_its_subscribers_fall_back_and_climb_again(
    make_client: ClientFactory, room: str
) -> None:
    """The publisher stops sending its top layer by itself (as a CPU- or bandwidth-limited
    browser does): its subscriber falls to the best layer still arriving, and climbs back to
    the top layer when it returns — no preference changed."""
    publisher = await make_client(room, "publisher")
    local = await publisher.publish_simulcast(
        MarkerVideoTrack(PALETTE[COLOUR], WIDTH, HEIGHT, FPS), fps=FPS
    )
    simulcast = local.simulcast
    assert simulcast is not None and publisher.participant_id is not None
    viewer, remote = await subscribe(make_client, room, "viewer", publisher.participant_id)
    await decode_layer(remote, LARGE)
    simulcast.set_active("f", False)
    await decode_layer(remote, MEDIUM)
    simulcast.set_active("f", True)
    await decode_layer(remote, LARGE)
    assert not publisher.errors and not viewer.errors
