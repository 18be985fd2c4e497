"""A subscriber's transport-cc feedback drives its bandwidth estimate (issue 10).

Real aiortc peers on loopback: the server offers the transport-wide sequence number, the Python
client answers it and sends feedback (as browsers do), and the server estimates from it — on
loopback its first probes lift the estimate above the 1 Mbit/s it starts from. Without
transport-cc the subscriber's REMB is the estimate. A subscriber sending malformed or bogus
feedback harms nobody: the others keep their video and their estimates.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Mapping
from typing import Any

import pytest

from sfu.media.aiortc_bridge import send_srtp
from sfu_client import PALETTE, MarkerVideoTrack, SfuClient

from .conftest import ClientFactory, SfuServer
from .observe import metric

pytestmark = pytest.mark.e2e

TIMEOUT = 30.0
#: The estimate starts at 1 Mbit/s; on an idle loopback the first probe clusters verify several
#: times that, but a probe measures what the server managed to send too, and on a busy 2-core CI
#: machine that was 1.8 Mbit/s once: "the probes lifted it" is the claim, not how far.
PROBED = 1_250_000


async def _estimate_above(client: SfuClient, bitrate: float) -> Mapping[str, Any]:
    message = await client.wait_for(
        lambda m: m.type == "connectionQuality" and (m.data.get("estimateBps") or 0) > bitrate,
        TIMEOUT,
    )
    return message.data


async def _frames(client: SfuClient, publisher: SfuClient, count: int) -> int:
    assert publisher.participant_id is not None
    remote = await client.wait_for_track(publisher.participant_id, "video", TIMEOUT)
    received = 0
    deadline = time.monotonic() + TIMEOUT
    while received < count and time.monotonic() < deadline:
        await asyncio.wait_for(remote.track.recv(), TIMEOUT)
        received += 1
    return received


async def test_a_subscribers_feedback_drives_its_estimate(
    make_client: ClientFactory, room: str, sfu_server: SfuServer
) -> None:
    publisher = await make_client(room, "publisher")
    subscriber = await make_client(room, "subscriber")
    await publisher.publish(MarkerVideoTrack(PALETTE[1], 320, 180, 15))
    report = await _estimate_above(subscriber, PROBED)
    assert report["quality"] in ("excellent", "good"), report
    assert subscriber.transport_cc_feedback is not None
    assert subscriber.transport_cc_feedback.sent > 0
    assert await metric(sfu_server, "sfu_transport_feedback_received_total") > 0
    assert await metric(sfu_server, "sfu_probe_clusters_total") > 0
    assert await metric(sfu_server, "sfu_subscriber_bandwidth_estimate_bps_count") > 0
    assert await _frames(subscriber, publisher, 10) == 10


async def test_without_transport_cc_the_remb_is_the_estimate(
    room: str, sfu_server: SfuServer, make_client: ClientFactory
) -> None:
    publisher = await make_client(room, "publisher")
    subscriber = await SfuClient.connect(sfu_server.ws_url, room, "remb only", transport_cc=False)
    try:
        await publisher.publish(MarkerVideoTrack(PALETTE[3], 320, 180, 15))
        report = await subscriber.wait_for(
            lambda m: m.type == "connectionQuality" and m.data.get("estimateBps") is not None,
            TIMEOUT,
        )
        assert subscriber.transport_cc_feedback is None
        assert report.data["estimateBps"] > 0
        assert await metric(sfu_server, "sfu_transport_feedback_received_total") == 0
        assert await _frames(subscriber, publisher, 10) == 10
    finally:
        await subscriber.close()


def _bogus_feedback(rng: random.Random, sender_ssrc: int) -> bytes:
    """RTPFB FMT 15 with an FCI that is random, cut short, or claims 65,535 packets."""
    kind = rng.randrange(3)
    if kind == 0:
        fci = rng.randbytes(rng.randrange(0, 40))
    elif kind == 1:
        fci = struct.pack("!HHI", rng.randrange(65536), 65535, rng.getrandbits(32)) + b"\xff\xff"
    else:  # well formed, for packets never sent, with huge negative deltas
        fci = struct.pack("!HHI", rng.randrange(65536), 7, 0) + struct.pack("!H", 0x4000 | 7)
        fci += struct.pack("!h", -32768) * 7
    fci += bytes(-len(fci) % 4)
    length = (8 + len(fci)) // 4
    return struct.pack("!BBHII", 0x8F, 205, length, sender_ssrc, 0) + fci


async def test_bogus_feedback_harms_nobody(
    make_client: ClientFactory, room: str, sfu_server: SfuServer
) -> None:
    publisher = await make_client(room, "publisher")
    honest = await make_client(room, "honest")
    hostile = await make_client(room, "hostile")
    await publisher.publish(MarkerVideoTrack(PALETTE[4], 320, 180, 15))
    assert await _frames(hostile, publisher, 1) == 1  # connected
    dtls = next(t.receiver.transport for t in hostile.pc.getTransceivers() if t.receiver.transport)
    rng = random.Random(10)
    for _ in range(300):
        assert await send_srtp(dtls, _bogus_feedback(rng, 0x1234))
    await asyncio.sleep(0.5)
    report = await _estimate_above(honest, PROBED)
    assert report["quality"] in ("excellent", "good"), report
    assert await _frames(honest, publisher, 10) == 10
    assert await _frames(hostile, publisher, 10) == 10, "its own video goes on"
    assert not honest.errors and not publisher.errors
