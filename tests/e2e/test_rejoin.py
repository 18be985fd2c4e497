"""The Python client joins again by itself when its session cannot be resumed, with real peers.

The server runs with a 1 s resume window. Alice's WebSocket goes through a TCP proxy
(tests/e2e/outage.py) that strands it: the server sees the socket drop and, after the window,
removes her (Bob sees her leave); Alice notices only when the proxy then cuts her side. Her resume
is refused (``resume-failed``), and she joins again: new participant id, new peer connection, the
same camera track published again (single or simulcast, as it was), her choice not to receive
Bob's screen asked for again. Bob sees her join again and decodes her camera again; she decodes
his. Timings are printed (-s).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest
from aiortc import MediaStreamTrack

from sfu_client import PALETTE, FrameProbe, MarkerVideoTrack, SfuClient
from sfu_client.client import RemoteTrack, ServerMessage, SessionLost

from .conftest import ClientFactory, SfuServer
from .outage import CuttableProxy

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT, FPS = 160, 120, 15
TIMEOUT = 20.0
RESUME_WINDOW = 1.0


@pytest.fixture
def server_module(monkeypatch: pytest.MonkeyPatch) -> str:
    """The server of these tests keeps a dropped participant for RESUME_WINDOW only (the
    subprocess inherits the environment; with AIOSFU_E2E_URL, start that one so)."""
    monkeypatch.setenv("SFU_RESUME_WINDOW", str(RESUME_WINDOW))
    return "signaling.cli"


def carried(client: SfuClient, publisher: SfuClient, source: str) -> RemoteTrack | None:
    return next(
        (
            r
            for r in client.remote_tracks.values()
            if r.participant_id == publisher.participant_id and r.source == source
        ),
        None,
    )


async def first_frame(client: SfuClient, publisher: SfuClient, source: str) -> float:
    """When the first frame of ``publisher``'s ``source`` decoded at ``client`` arrived."""
    await client.wait_until(
        lambda: carried(client, publisher, source) is not None,
        TIMEOUT,
        f"for {publisher.name}'s {source}",
    )
    remote = carried(client, publisher, source)
    assert remote is not None
    remote.drain()
    probe = FrameProbe(remote.track)
    await probe.run(count=1, timeout=TIMEOUT)
    assert probe.records, f"no {source} frame from {publisher.name}"
    return probe.records[0].at


def message(client: SfuClient, type_: str, **fields: object) -> ServerMessage | None:
    return next(
        (
            m
            for m in client.history
            if m.type == type_ and all(m.data.get(k) == v for k, v in fields.items())
        ),
        None,
    )


@pytest.mark.parametrize("simulcast", [False, True], ids=["single", "simulcast"])
async def test_rejoins_when_the_resume_is_refused(
    make_client: ClientFactory, sfu_server: SfuServer, room: str, simulcast: bool
) -> None:
    bob = await make_client(room, "bob")  # first: it pins ICE to 127.0.0.1
    target = urlsplit(sfu_server.url)
    proxy = CuttableProxy(target.hostname or "127.0.0.1", target.port or 80)
    port = await proxy.start()
    alice = await SfuClient.connect(f"http://127.0.0.1:{port}", room, "alice")
    camera: MediaStreamTrack = MarkerVideoTrack(PALETTE[0], WIDTH, HEIGHT, FPS)
    try:
        await bob.publish(MarkerVideoTrack(PALETTE[1], WIDTH, HEIGHT, FPS), "camera")
        screen = await bob.publish(MarkerVideoTrack(PALETTE[2], WIDTH, HEIGHT, FPS), "screen")
        await alice.wait_for_participant("bob")
        await alice.wait_until(
            lambda: screen.track_id in alice.remote_tracks, TIMEOUT, "for Bob's screen"
        )
        # settled before Alice offers (glare with a removal is test_glare_removal.py's subject)
        await alice.unsubscribe([screen.track_id])
        await alice.wait_until(
            lambda: carried(alice, bob, "screen") is None, TIMEOUT, "Bob's screen to go"
        )
        if simulcast:
            local = await alice.publish_simulcast(camera, "camera", fps=FPS)
        else:
            local = await alice.publish(camera, "camera")
        publisher, options = local.simulcast, local.simulcast_options
        await first_frame(bob, alice, "camera")
        await first_frame(alice, bob, "camera")
        old_id, old_track_id = alice.participant_id, local.track_id
        old_remote = carried(alice, bob, "camera")
        assert old_id is not None and old_remote is not None
        assert carried(alice, bob, "screen") is None

        proxy.strand()
        # a call in flight when the session is lost: its offer went into the dead socket
        publishing = asyncio.create_task(
            alice.publish(MarkerVideoTrack(PALETTE[3], WIDTH, HEIGHT, FPS), "screen")
        )
        await bob.wait_for_message("participant-left", TIMEOUT, participantId=old_id)
        proxy.cut()  # Alice's side now: she notices, and her resume reaches a server that
        proxy.restore()  # forgot her
        cut_at = time.monotonic()

        back = await alice.wait_for_message("reconnected", TIMEOUT)
        new_id = alice.participant_id
        print(f"rejoined {back.at - cut_at:.2f} s after the cut: {back.data}")
        assert back.data["how"] == "rejoined"
        assert back.data["participantId"] == new_id != old_id
        assert back.data["previousParticipantId"] == old_id
        assert "resume-failed" in back.data["reason"]
        assert (alice.rejoins, alice.resumes, alice.closed) == (1, 0, False)
        with pytest.raises(SessionLost, match="joining again"):
            await publishing
        reconnecting = message(alice, "reconnecting")
        assert reconnecting is not None and reconnecting.at <= back.at

        # the same LocalTrack object and track, with a new id; nothing else published
        assert list(alice.local_tracks.values()) == [local]
        assert local.track is camera and camera.readyState == "live"
        assert local.track_id != old_track_id
        if simulcast:  # the same layers, sent by a new publisher on the new connection
            assert publisher is not None and publisher.closed and options is not None
            assert local.simulcast is not None and local.simulcast is not publisher
            assert local.simulcast_options == options and not local.simulcast.closed
            assert local.simulcast.rids == publisher.rids
        else:
            assert local.simulcast is None
        # what Alice received on the old connection ended
        assert not old_remote.active and old_remote.track.readyState == "ended"

        joined = await bob.wait_for(
            lambda m: (
                m.type == "participant-joined" and m.data["participant"]["participantId"] == new_id
            ),
            TIMEOUT,
        )
        assert joined.data["participant"]["name"] == "alice"
        assert new_id in bob.participants and old_id not in bob.participants
        assert [t.track_id for t in bob.participants[new_id].tracks.values()] == [local.track_id]

        at_bob = await first_frame(bob, alice, "camera")
        at_alice = await first_frame(alice, bob, "camera")
        print(
            f"first frame after the cut: at bob {at_bob - cut_at:.2f} s, "
            f"at alice {at_alice - cut_at:.2f} s"
        )
        assert at_bob > cut_at and at_alice > cut_at
        # her choice not to receive Bob's screen held through the rejoin
        assert alice.wants(screen.track_id) is False
        await alice.wait_until(
            lambda: carried(alice, bob, "screen") is None, TIMEOUT, "Bob's screen to go"
        )
        assert alice.errors == [] and bob.errors == []
    finally:
        await alice.close()
        await proxy.close()
        camera.stop()


async def test_closes_when_it_cannot_join_again(
    make_client: ClientFactory, sfu_server: SfuServer, room: str
) -> None:
    await make_client(room, "bob")
    target = urlsplit(sfu_server.url)
    proxy = CuttableProxy(target.hostname or "127.0.0.1", target.port or 80)
    port = await proxy.start()
    alice = await SfuClient.connect(f"http://127.0.0.1:{port}", room, "alice")
    alice.rejoin_attempts = 2
    try:
        proxy.cut()  # for good: neither the resume nor the join gets through
        closed = await alice.wait_for(lambda m: m.type == "connection-closed", TIMEOUT)
        reason = closed.data["reason"]
        assert "could not resume" in reason and "nor join again" in reason, reason
        assert message(alice, "reconnecting") is not None
        assert message(alice, "reconnected") is None
        assert alice.rejoins == 0 and alice.closed
    finally:
        await alice.close()
        await proxy.close()
