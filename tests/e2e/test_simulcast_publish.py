"""A Python client publishing rid simulcast through the real server (issue 9).

The publisher sends one marker-coloured source as three VP8 layers (80x45, 160x90, 320x180) on
one m-line; a subscriber that states no preference gets the best layer its budget allows and
decodes it: frames of the full size, in the publisher's colour, and never a frame of another
size than the layers'. A subscriber asking for the smallest layer makes the server turn the
others off at the publisher (publisherLayers), and on again when it asks for the best.
"""

from __future__ import annotations

import asyncio
import time

import av
import pytest
from aiortc import MediaStreamTrack

from sfu_client import PALETTE, MarkerVideoTrack, closest_color, frame_color

from .conftest import ClientFactory

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT, FPS = 320, 180, 15
LAYER_SIZES = {"q": (80, 45), "h": (160, 90), "f": (320, 180)}
MEDIA_TIMEOUT = 30.0  # generous: a 2-core machine runs the server and both peers
BEST_FRAMES = 10  # full-size frames the subscriber must decode
SETTLE_FRAMES = 2  # the first frames after a keyframe may still be converging in colour


async def test_a_subscriber_decodes_the_best_layer_of_a_simulcast_publisher(
    make_client: ClientFactory, room: str
) -> None:
    publisher = await make_client(room, "publisher")
    subscriber = await make_client(room, "subscriber")
    colour = 2
    track = MarkerVideoTrack(PALETTE[colour], WIDTH, HEIGHT, FPS)
    local = await publisher.publish_simulcast(track, fps=FPS)
    simulcast = local.simulcast
    assert simulcast is not None and simulcast.negotiated is not None
    assert simulcast.negotiated.rids == ("q", "h", "f"), "the server's answer takes every layer"
    assert publisher.participant_id is not None
    remote = await subscriber.wait_for_track(publisher.participant_id, "video", MEDIA_TIMEOUT)

    sizes: list[tuple[int, int]] = []
    best_colours: list[int] = []
    deadline = time.monotonic() + MEDIA_TIMEOUT
    while len(best_colours) < BEST_FRAMES + SETTLE_FRAMES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            frame = await asyncio.wait_for(remote.track.recv(), remaining)
        except TimeoutError:
            break
        assert isinstance(frame, av.VideoFrame)
        sizes.append((frame.width, frame.height))
        if sizes[-1] == LAYER_SIZES["f"]:
            best_colours.append(closest_color(frame_color(frame)))

    stats = {r: (layer.packets_sent, layer.keyframes_sent) for r, layer in simulcast.layers.items()}
    assert len(best_colours) >= BEST_FRAMES + SETTLE_FRAMES, (
        f"{len(best_colours)} full-size frames within {MEDIA_TIMEOUT} s; sizes decoded "
        f"{sorted(set(sizes))}, publisher (packets, keyframes) per layer {stats}"
    )
    assert set(sizes) <= set(LAYER_SIZES.values()), f"a frame of no layer's size: {set(sizes)}"
    assert best_colours[SETTLE_FRAMES:] == [colour] * (len(best_colours) - SETTLE_FRAMES)
    # the publisher sent every layer (the server had them to choose from)
    assert all(layer.packets_sent > 0 for layer in simulcast.layers.values()), stats
    assert {r: layer.size for r, layer in simulcast.layers.items()} == LAYER_SIZES
    # unpublished: the server takes the m-line turned inactive, the layers stop
    await publisher.unpublish(local.track_id)
    await subscriber.wait_for_message("track-unpublished", MEDIA_TIMEOUT, trackId=local.track_id)
    assert simulcast.closed and not publisher.errors


async def _decode_until(
    track: MediaStreamTrack, size: tuple[int, int], count: int
) -> list[tuple[int, int]]:
    """Frames' sizes decoded until ``count`` frames of ``size`` arrived (or MEDIA_TIMEOUT)."""
    sizes: list[tuple[int, int]] = []
    deadline = time.monotonic() + MEDIA_TIMEOUT
    while sizes.count(size) < count and time.monotonic() < deadline:
        try:
            frame = await asyncio.wait_for(track.recv(), deadline - time.monotonic())
        except TimeoutError:
            break
        assert isinstance(frame, av.VideoFrame)
        sizes.append((frame.width, frame.height))
    return sizes


async def test_layers_nobody_receives_are_turned_off_at_the_publisher(
    make_client: ClientFactory, room: str
) -> None:
    publisher = await make_client(room, "publisher")
    subscriber = await make_client(room, "subscriber")
    track = MarkerVideoTrack(PALETTE[3], WIDTH, HEIGHT, FPS)
    local = await publisher.publish_simulcast(track, fps=FPS)
    simulcast = local.simulcast
    assert simulcast is not None and publisher.participant_id is not None
    remote = await subscriber.wait_for_track(publisher.participant_id, "video", MEDIA_TIMEOUT)
    await subscriber.set_track_settings([local.track_id], max_layer=0)
    # the server tells the publisher (publisherLayers) that only the smallest layer is wanted
    await publisher.wait_until(
        lambda: [r for r, layer in simulcast.layers.items() if layer.active] == ["q"],
        MEDIA_TIMEOUT,
        "for h and f to be turned off",
    )
    sent = {r: layer.packets_sent for r, layer in simulcast.layers.items()}
    remote.drain()
    sizes = await _decode_until(remote.track, LAYER_SIZES["q"], 10)
    assert sizes.count(LAYER_SIZES["q"]) >= 10, sizes
    assert simulcast.layers["q"].packets_sent > sent["q"]
    assert {r: simulcast.layers[r].packets_sent for r in "hf"} == {"h": sent["h"], "f": sent["f"]}
    # asking for the best again turns f back on, and the subscriber climbs to it
    await subscriber.set_track_settings([local.track_id])
    await publisher.wait_until(lambda: simulcast.layers["f"].active, MEDIA_TIMEOUT, "for f")
    sizes = await _decode_until(remote.track, LAYER_SIZES["f"], 5)
    assert sizes.count(LAYER_SIZES["f"]) >= 5, sizes
    assert set(sizes) <= set(LAYER_SIZES.values()), sizes
