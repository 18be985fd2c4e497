"""Session resume with real peers: a subscriber loses its network (signaling and media) for a
few seconds mid-call, comes back by itself with the same id, and nobody saw it leave.

The subscriber's WebSocket goes through a TCP proxy the test cuts (tests/e2e/outage.py); its
media sockets drop everything for the same time. While it is away the publisher publishes a
second track, so the resumed session must replay a ``track-published`` and a server ``offer``.
Timings are printed (run with -s) and asserted only against generous bounds.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest

from sfu_client import PALETTE, FrameProbe, MarkerVideoTrack, SfuClient

from .conftest import ClientFactory, SfuServer
from .outage import CuttableProxy, udp_outage

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT, FPS = 160, 120, 15
MEDIA_TIMEOUT = 20.0
OUTAGE = 3.0


async def frames_after(client: SfuClient, publisher: SfuClient, source: str, since: float) -> float:
    """Seconds from ``since`` to the first frame of ``publisher``'s ``source`` track at
    ``client`` that arrives after ``since``."""
    assert publisher.participant_id is not None
    await client.wait_until(
        lambda: any(
            r.participant_id == publisher.participant_id and r.source == source
            for r in client.remote_tracks.values()
        ),
        MEDIA_TIMEOUT,
        f"for {publisher.name}'s {source}",
    )
    remote = next(
        r
        for r in client.remote_tracks.values()
        if r.participant_id == publisher.participant_id and r.source == source
    )
    remote.drain()
    probe = FrameProbe(remote.track)
    await probe.run(count=3, timeout=MEDIA_TIMEOUT)
    fresh = [r.at for r in probe.records if r.at > since]
    assert fresh, f"no {source} frame from {publisher.name} after the outage"
    return fresh[0] - since


async def test_subscriber_resumes_after_an_outage(
    make_client: ClientFactory, sfu_server: SfuServer, room: str
) -> None:
    target = urlsplit(sfu_server.url)
    proxy = CuttableProxy(target.hostname or "127.0.0.1", target.port or 80)
    port = await proxy.start()
    publisher = await make_client(room, "publisher")
    subscriber = await SfuClient.connect(f"http://127.0.0.1:{port}", room, "subscriber")
    try:
        await publisher.publish(MarkerVideoTrack(PALETTE[0], WIDTH, HEIGHT, FPS), "camera")
        first = await frames_after(subscriber, publisher, "camera", time.monotonic())
        print(f"first frame {first:.2f} s")
        subscriber_id = subscriber.participant_id
        assert subscriber_id is not None and subscriber.resume.possible

        cut_at = time.monotonic()
        with udp_outage(subscriber):
            proxy.cut()
            await asyncio.sleep(0.5)
            # the room moves on while the subscriber is away
            await publisher.publish(MarkerVideoTrack(PALETTE[1], WIDTH, HEIGHT, FPS), "screen")
            await asyncio.sleep(OUTAGE - 0.5)
            proxy.restore()
        restored_at = time.monotonic()

        back = await subscriber.wait_for_message("reconnected", MEDIA_TIMEOUT)
        print(f"resumed {back.at - restored_at:.2f} s after the network came back: {back.data}")
        assert back.data["how"] == "resumed"
        assert back.data["replayed"] >= 2  # at least track-published and the server offer
        assert subscriber.participant_id == subscriber_id
        assert subscriber.resumes == 1
        assert not subscriber.closed

        camera = await frames_after(subscriber, publisher, "camera", restored_at)
        screen = await frames_after(subscriber, publisher, "screen", restored_at)
        print(f"media after the network came back: camera {camera:.2f} s, screen {screen:.2f} s")
        assert camera < MEDIA_TIMEOUT and screen < MEDIA_TIMEOUT

        # nobody saw the subscriber leave or join again
        seen = [
            m.type
            for m in publisher.history
            if m.at >= cut_at and m.data.get("participantId", "") == subscriber_id
        ]
        joins = [m for m in publisher.history if m.type == "participant-joined"]
        assert "participant-left" not in seen, seen
        assert len(joins) == 1, [m.data for m in joins]
        assert subscriber_id in publisher.participants
        assert subscriber.errors == [] and publisher.errors == []
    finally:
        await subscriber.close()
        await proxy.close()
