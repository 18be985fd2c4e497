"""ICE restart with real peers (RFC 8445 §9): a client's offer with new ICE credentials starts
a new ICE session on the same peer connection; DTLS, SRTP, tracks and ids stay.

Both clients here keep their addresses (the network-change case, an address that moves between
namespaces, is issue 11's next step); what is checked is the restart itself: new credentials on
both sides, new checks, a new nominated pair, and media both ways before, during and after.
Timings are printed (run with -s) and asserted only against generous bounds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sfu.media.aiortc_bridge import ice_credentials
from sfu_client import PALETTE, FrameProbe, MarkerVideoTrack, SfuClient

from .conftest import ClientFactory, SfuServer
from .observe import metric
from .outage import udp_outage

pytestmark = pytest.mark.e2e


@pytest.fixture(
    params=[("--socket-per-participant",), ()], ids=["socket-per-participant", "udp-port"]
)
def server_args(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """Both socket models: a socket per participant, and one shared port (the default)."""
    return request.param  # type: ignore[no-any-return]


WIDTH, HEIGHT, FPS = 160, 120, 15
MEDIA_TIMEOUT = 20.0


async def fresh_frames(receiver: SfuClient, sender: SfuClient, since: float) -> float:
    """Seconds from ``since`` to the first of ``sender``'s video frames ``receiver`` decodes
    that arrived after ``since``."""
    assert sender.participant_id is not None
    remote = await receiver.wait_for_track(sender.participant_id, "video", MEDIA_TIMEOUT)
    remote.drain()
    probe = FrameProbe(remote.track)
    await probe.run(count=5, timeout=MEDIA_TIMEOUT)
    fresh = [r.at for r in probe.records if r.at > since]
    assert fresh, f"{receiver.name} decoded no frame of {sender.name} after the restart"
    return fresh[0] - since


def ice_state(client: SfuClient) -> tuple[str, str, Any]:
    """(local ufrag, remote ufrag, nominated pair) of the client's ICE connection."""
    dtls: Any = client.pc.getTransceivers()[0].receiver.transport
    connection = dtls.transport._connection
    return connection.local_username, connection.remote_username, connection._nominated.get(1)


async def test_both_clients_restart_ice_mid_call(
    make_client: ClientFactory, sfu_server: SfuServer, room: str
) -> None:
    alice, bob = await make_client(room, "alice"), await make_client(room, "bob")
    await alice.publish(MarkerVideoTrack(PALETTE[0], WIDTH, HEIGHT, FPS), "camera")
    await bob.publish(MarkerVideoTrack(PALETTE[1], WIDTH, HEIGHT, FPS), "camera")
    await fresh_frames(bob, alice, time.monotonic())
    await fresh_frames(alice, bob, time.monotonic())

    for client, other in ((bob, alice), (alice, bob)):
        ids = (client.participant_id, other.participant_id)
        local, remote, pair = ice_state(client)
        offers = len([m for m in client.history if m.type == "answer"])
        started = time.monotonic()
        took = await client.restart_ice()
        new_local, new_remote, new_pair = ice_state(client)
        answer = [m for m in client.history if m.type == "answer"][offers:]
        print(f"{client.name}: ICE restart {took:.2f} s, new pair {new_pair}")
        assert new_local != local and new_remote != remote  # a new session, both sides
        assert ice_credentials(str(answer[-1].data["sdp"]))[0] == new_remote  # type: ignore[index]
        assert new_pair is not None and new_pair is not pair
        assert (client.participant_id, other.participant_id) == ids
        # media both ways after it, on the same DTLS/SRTP session (no new handshake)
        there = await fresh_frames(other, client, started)
        back = await fresh_frames(client, other, started)
        print(
            f"  frames after the restart: {client.name}->{other.name} {there:.2f} s,"
            f" back {back:.2f} s"
        )
        assert client.ice_restarts == 1 and not client.closed
    assert await metric(sfu_server, "sfu_participants") == 2
    assert alice.errors == [] and bob.errors == []
    left = [m for m in alice.history + bob.history if m.type == "participant-left"]
    assert left == []


async def test_the_server_restarts_ice_when_a_path_goes_silent(
    make_client: ClientFactory, sfu_server: SfuServer, room: str
) -> None:
    """Nothing from a client for half the peer timeout (4 s): the server offers an ICE restart
    itself. The client only answers (as a browser does, natively); the new session's checks
    succeed once its packets flow again, before the peer timeout would remove it."""
    publisher, watcher = await make_client(room, "publisher"), await make_client(room, "watcher")
    await publisher.publish(MarkerVideoTrack(PALETTE[0], WIDTH, HEIGHT, FPS), "camera")
    await fresh_frames(watcher, publisher, time.monotonic())
    before = ice_state(watcher)

    silenced = time.monotonic()
    with udp_outage(watcher):
        offer = await watcher.wait_for(lambda m: m.type == "offer" and m.at > silenced, 8.0)
        assert ice_credentials(str(offer.data["sdp"])) is not None
        print(f"server's restart offer {offer.at - silenced:.2f} s into the silence")
        await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - silenced)))
    restored = time.monotonic()
    done = await watcher.wait_for_message("ice-restarted", 12.0)
    after = ice_state(watcher)
    print(f"restart done {done.at - restored:.2f} s after the path came back: {done.data}")
    assert done.data["by"] == "server" and watcher.ice_restarts == 1
    assert after[0] != before[0] and after[1] != before[1]  # new credentials on both sides
    took = await fresh_frames(watcher, publisher, restored)
    print(f"first frame {took:.2f} s after the path came back")
    assert not watcher.closed and watcher.participant_id in publisher.participants
