"""Selective subscription (docs/protocol.md: `autoSubscribe`, `subscribe`, `unsubscribe`).

Real server subprocess, real aiortc clients on 127.0.0.1. Each test also has a participant that
misbehaves or churns around the feature.
"""

from __future__ import annotations

import asyncio

import pytest

from sfu_client import ServerError, SfuClient

from .conftest import ClientFactory
from .test_call import MEDIA_TIMEOUT, assert_received, publish_markers, receive

pytestmark = pytest.mark.e2e


def carried(client: SfuClient) -> set[str]:
    return set(client.remote_tracks)


async def settle(client: SfuClient, expected: set[str]) -> None:
    await client.wait_until(
        lambda: carried(client) == expected and client.pc.signalingState == "stable",
        MEDIA_TIMEOUT,
        f"for the m-lines to carry exactly {sorted(expected)}",
    )


async def test_without_auto_subscribe_only_what_is_asked_for_arrives(
    make_client: ClientFactory, room: str
) -> None:
    viewer = await make_client(room, "viewer", auto_subscribe=False)
    alice = await make_client(room, "alice")
    video, audio = await publish_markers(alice, 0)
    assert audio is not None
    await viewer.wait_until(
        lambda: len(viewer.participants[alice.participant_id or ""].tracks) == 2,
        MEDIA_TIMEOUT,
        "for alice's tracks to be announced",
    )
    await asyncio.sleep(0.5)
    assert carried(viewer) == set()  # announced, not offered

    await viewer.subscribe([video.track_id])
    await settle(viewer, {video.track_id})
    assert_received([await receive(viewer, alice, "video", 0)])

    await viewer.subscribe([audio.track_id])
    await viewer.unsubscribe([video.track_id])
    await settle(viewer, {audio.track_id})
    assert_received([await receive(viewer, alice, "audio", 0)])
    assert not viewer.errors


async def test_unsubscribe_stops_one_track_and_keeps_the_rest(
    make_client: ClientFactory, room: str
) -> None:
    alice = await make_client(room, "alice")
    bob = await make_client(room, "bob")
    video, audio = await publish_markers(alice, 1)
    assert audio is not None
    await settle(bob, {video.track_id, audio.track_id})
    await bob.unsubscribe([audio.track_id])
    await settle(bob, {video.track_id})
    assert_received([await receive(bob, alice, "video", 1, fresh=True)])
    # subscribed again: the same m-line carries it again, no new one
    m_lines = len(bob.pc.getTransceivers())
    await bob.subscribe([audio.track_id])
    await settle(bob, {video.track_id, audio.track_id})
    assert_received([await receive(bob, alice, "audio", 1, fresh=True)])
    assert len(bob.pc.getTransceivers()) == m_lines
    assert not bob.errors


async def test_bad_subscriptions_get_errors_and_change_nothing(
    make_client: ClientFactory, room: str
) -> None:
    """Unknown ids, one's own track, a track of another room: unknown-track, all or nothing."""
    alice = await make_client(room, "alice")
    other_room = await make_client(room + "-other", "stranger")
    mallory = await make_client(room, "mallory", auto_subscribe=False)
    video, _ = await publish_markers(alice, 2)
    stranger_video, _ = await publish_markers(other_room, 3)
    own_video, _ = await publish_markers(mallory, 4, settled=False)

    for track_ids in (
        ["TR_nope"],
        [own_video.track_id],
        [stranger_video.track_id],
        [video.track_id, "TR_nope"],  # all or nothing: the valid one is not taken either
        [f"TR_{i}" for i in range(512)],
    ):
        before = len(mallory.errors)
        await mallory.subscribe(track_ids)
        await mallory.wait_until(
            lambda before=before: len(mallory.errors) > before,  # type: ignore[misc]
            MEDIA_TIMEOUT,
            "for the error",
        )
        error = mallory.errors[-1]
        assert isinstance(error, ServerError) and error.code == "unknown-track", error
        assert len(error.message) < 300
    await asyncio.sleep(0.5)
    assert carried(mallory) == set()
    # the one who misbehaved still works, and so does everyone else
    await mallory.subscribe([video.track_id])
    await settle(mallory, {video.track_id})
    assert_received([await receive(mallory, alice, "video", 2)])
    assert not alice.errors and not other_room.errors


async def test_choices_end_with_the_track_after_churn(
    make_client: ClientFactory, room: str
) -> None:
    """A publisher that leaves and comes back has new track ids: an unsubscribed participant does
    not get them, an auto-subscribed one does, and nobody keeps an m-line per departed track."""
    picky = await make_client(room, "picky", auto_subscribe=False)
    eager = await make_client(room, "eager")
    for round_ in range(3):
        carol = await make_client(room, f"carol{round_}")
        video, audio = await publish_markers(carol, round_)
        assert audio is not None
        if round_ == 0:
            await picky.subscribe([video.track_id])
            await settle(picky, {video.track_id})
        await settle(eager, {video.track_id, audio.track_id})
        await carol.leave()
        await settle(eager, set())
    await settle(picky, set())
    assert len(picky.pc.getTransceivers()) == 1
    assert len(eager.pc.getTransceivers()) == 2
    last = await make_client(room, "last")
    video, audio = await publish_markers(last, 5)
    assert audio is not None
    await settle(eager, {video.track_id, audio.track_id})
    await asyncio.sleep(0.5)
    assert carried(picky) == set()
    assert_received([await receive(eager, last, "video", 5)])
