"""A first connection that does not come up is retried with an ICE restart (issue 11: "a
connection that does not come up is retried before anyone is told ``ice-failed``").

The client here is blacked out (nothing in or out of its ICE sockets, ``udp_outage``) from
before its first check: aioice's checks then retransmit at 0.5, 1.5, 3.5, 7.5 and 15.5 s
(RFC 5389 §7.2.1's doubling from 500 ms), so a path that opens after 7.5 s is found by the
first session only at 15.5 s. The server is started with ``--connect-timeout 14``:

- without a retry it ends the participant with ``ice-failed`` at 14 s;
- with it, at half the timeout (7 s, plus the liveness check's tick) the server offers an ICE
  restart, whose new checks start then and retransmit while the path is still closed; the
  path opens at 9 s and the restart's checks find it at their next retransmission.

The second test restarts from the client's side (what ``network_changed`` does when the
network moves while a call is being set up): both peers' first connects are taken over by the
restart rather than left waiting for a session that no longer exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sfu_client import PALETTE, MarkerVideoTrack, SfuClient

from .conftest import ClientFactory
from .outage import udp_outage
from .test_ice_restart import FPS, HEIGHT, WIDTH, fresh_frames

pytestmark = pytest.mark.e2e

CONNECT_TIMEOUT = 14.0
OUTAGE = 9.0  # past the first session's retransmission at 7.5 s, before the restart's at ~10.5
CONNECTED_TIMEOUT = CONNECT_TIMEOUT + 6.0


@pytest.fixture(autouse=True)
def _connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFU_CONNECT_TIMEOUT", str(CONNECT_TIMEOUT))


@contextlib.contextmanager
def blacked_out_from_the_start(client: SfuClient) -> Iterator[list[float]]:
    """Black ``client`` out as soon as its candidates are gathered (before its first check);
    yields a list that gets the moment the outage began."""
    began: list[float] = []
    outage = contextlib.ExitStack()

    def gathered() -> None:
        if client.pc.iceGatheringState == "complete" and not began:
            outage.enter_context(udp_outage(client))
            began.append(time.monotonic())

    client.pc.on("icegatheringstatechange", gathered)
    with outage:
        yield began


async def connected(client: SfuClient) -> float:
    """Wait for the client's peer connection to be up; the moment it was seen."""
    await client.wait_connected(CONNECTED_TIMEOUT)
    return time.monotonic()


async def until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def test_the_server_retries_a_first_connection_with_an_ice_restart(
    make_client: ClientFactory, room: str
) -> None:
    publisher = await make_client(room, "publisher")
    await publisher.publish(MarkerVideoTrack(PALETTE[0], WIDTH, HEIGHT, FPS), "camera")
    watcher = await make_client(room, "watcher", join=False)
    with blacked_out_from_the_start(watcher) as began:
        await watcher.join(room, "watcher")  # the server offers the publisher's track
        await watcher.wait_until(lambda: bool(began), 5.0, "candidates gathered")
        ids = watcher.participant_id
        offer = await watcher.wait_for(lambda m: m.type == "offer" and m.at > began[0], 12.0)
        print(f"server's restart offer {offer.at - began[0]:.2f} s after the join")
        await until(began[0] + OUTAGE)
    opened = time.monotonic()
    restarted = await watcher.wait_for_message("ice-restarted", CONNECTED_TIMEOUT)
    up = await connected(watcher)
    print(
        f"restart done {restarted.at - opened:.2f} s after the path opened,"
        f" connected {up - began[0]:.2f} s after the join (connect timeout {CONNECT_TIMEOUT} s)"
    )
    assert restarted.data["by"] == "server" and watcher.ice_restarts == 1
    took = await fresh_frames(watcher, publisher, opened)
    print(f"first frame {took:.2f} s after the path opened")
    assert watcher.participant_id == ids and not watcher.closed
    assert not [m for m in watcher.history if m.type == "bye"]
    assert watcher.participant_id in publisher.participants


async def test_a_client_restart_takes_over_a_first_connection(
    make_client: ClientFactory, room: str
) -> None:
    publisher = await make_client(room, "publisher")
    await publisher.publish(MarkerVideoTrack(PALETTE[0], WIDTH, HEIGHT, FPS), "camera")
    watcher = await make_client(room, "watcher", join=False)
    with blacked_out_from_the_start(watcher) as began:
        await watcher.join(room, "watcher")  # the server offers the publisher's track
        await watcher.wait_until(lambda: bool(began), 5.0, "candidates gathered")
        # the network moved while the call was being set up
        restart = asyncio.ensure_future(watcher.restart_ice())
        await until(began[0] + 1.0)
    opened = time.monotonic()
    took = await restart
    up = await connected(watcher)
    print(f"restart {took:.2f} s; connected {up - opened:.2f} s after the path opened")
    frames = await fresh_frames(watcher, publisher, opened)
    print(f"first frame {frames:.2f} s after the path opened")
    assert watcher.ice_restarts == 1 and not watcher.closed
    state: Any = watcher.pc.getTransceivers()[0].receiver.transport
    assert state.state == "connected"
