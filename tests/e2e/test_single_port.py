"""``sfu serve --udp-port``: every participant's media on one UDP socket per ICE host address.

Real server subprocess (``--udp-port 0``: an ephemeral port, shared), real aiortc clients on
127.0.0.1 (scale-out plan §2, steps S3 and S5):

- a room of 20 in four client processes (:mod:`tests.e2e.room_peers`), held past the 30 s in
  which RFC 7675 consent would have expired if the port answered no check: one socket, media
  between every pair throughout;
- a room of 8 in this process that churns, and a stranger sending garbage to the port.

Why four processes: 20 aiortc clients in one Python process on two cores fall behind their
sockets, their consent checks time out and after 30 s each client closes its own connection
(room_peers' docstring has the mechanism); browsers are a process each.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioice.stun import Class, Message, Method
from aiortc import MediaStreamTrack
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from sfu.api import Kind
from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu_client import PALETTE, TONES, MarkerVideoTrack, SfuClient, ToneAudioTrack

from .conftest import SfuServer
from .peer_process import Observed, PeerProcess

pytestmark = pytest.mark.e2e

PARTICIPANTS = 8
#: the large room: processes x participants each
PROCESSES, PER_PROCESS = 4, 5
#: the large room is held this long after its last participant connected (RFC 7675: consent
#: expires 30 s after the last answered check)
HOLD = 35.0
LEAVERS = 3
SPEAKERS = 3  # the others publish video only: Opus from all makes the check outlast the 30 s
TIMEOUT = 60.0  # 20 aiortc clients and the server share two cores
KINDS: tuple[Kind, ...] = ("audio", "video")


@pytest.fixture
def server_args() -> tuple[str, ...]:
    # what is checked is the transport: a loaded test process delays its transport-cc feedback,
    # and congestion control would pause videos for the estimates that follow
    return ("--udp-port", "0", "--no-congestion-control")


def udp_sockets(pid: int) -> list[tuple[str, int]]:
    """The local addresses of the UDP sockets ``pid`` holds, from iproute2's ``ss``."""
    out = subprocess.run(["ss", "-uanpH"], check=True, capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        if f"pid={pid}," in line:
            host, _, port = line.split()[3].rpartition(":")
            found.append((host.strip("[]"), int(port)))
    return found


async def scrape(server: SfuServer) -> list[Sample]:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as response:
        text = await response.text()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


async def unroutable(server: SfuServer) -> dict[str, float]:
    return {
        sample.labels["kind"]: sample.value
        for sample in await scrape(server)
        if sample.name == "sfu_udp_unroutable_total"
    }


async def port_io(server: SfuServer) -> list[float]:
    """(recvmmsg calls, datagrams read, sendmmsg calls, datagrams sent) of the shared port."""
    samples = {sample.name: sample.value for sample in await scrape(server)}
    names = ("reads", "datagrams_read", "send_batches", "batched_datagrams")
    return [samples[f"sfu_udp_{name}_total"] for name in names]


@pytest.fixture
async def clients(sfu_server: SfuServer) -> AsyncIterator[list[SfuClient]]:
    """Clients joined by :func:`join`, closed at teardown."""
    set_ice_host_addresses(["127.0.0.1"])
    made: list[SfuClient] = []
    try:
        yield made
    finally:
        await asyncio.gather(*(c.close() for c in made))
        for client in made:
            for local in client.local_tracks.values():
                local.track.stop()
        set_ice_host_addresses([])


async def join(server: SfuServer, made: list[SfuClient], room: str, index: int) -> SfuClient:
    # frames handed over as decoded: no playout task per received video
    client = await SfuClient.connect(server.ws_url, room, f"p{index}", playout_delay=False)
    made.append(client)
    tracks: list[tuple[MediaStreamTrack, str]] = [
        (MarkerVideoTrack(PALETTE[index % len(PALETTE)], 96, 64, 4), "camera")
    ]
    if index % (PARTICIPANTS // SPEAKERS) == 0:
        tracks.append((ToneAudioTrack(TONES[index % len(TONES)]), "microphone"))
    await client.publish_many(tracks)
    return client


async def packets(receiver: SfuClient, sender: SfuClient, kind: Kind) -> int:
    """RTP packets ``receiver`` got on the m-line carrying ``sender``'s track of ``kind``."""
    assert sender.participant_id is not None
    remote = await receiver.wait_for_track(sender.participant_id, kind, TIMEOUT)
    (transceiver,) = [t for t in receiver.pc.getTransceivers() if t.mid == remote.mid]
    report = await transceiver.receiver.getStats()
    return sum(
        getattr(stats, "packetsReceived", 0)
        for stats in report.values()
        if stats.type == "inbound-rtp"
    )


async def assert_media_flows(clients: list[SfuClient]) -> None:
    """Every client's packet count from every other client, per kind it sends, rises."""
    pairs = [
        (r, s, k)
        for r in clients
        for s in clients
        if r is not s
        for k in KINDS
        if k == "video" or any(t.kind == "audio" for t in s.local_tracks.values())
    ]
    before = await asyncio.gather(*(packets(r, s, k) for r, s, k in pairs))
    waiting = dict(zip(pairs, before, strict=True))
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while waiting and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(2.0)
        now = await asyncio.gather(*(packets(r, s, k) for r, s, k in waiting))
        waiting = {
            pair: count
            for (pair, count), fresh in zip(waiting.items(), now, strict=True)
            if fresh <= count
        }
    stalled = [f"{s.name}->{r.name} {k}" for r, s, k in waiting]
    assert not stalled, f"no new packets within {TIMEOUT} s: {stalled}"


def latest(seen: Observed) -> dict[str, Any]:
    """A room_peers process's last report: per participant name, its state."""
    return dict(seen.counters[-1]["clients"]) if seen.counters else {}


def flowing(peers: list[PeerProcess], size: int) -> bool:
    """Whether every participant is connected and has video from each of the others."""
    states = [s for p in peers for s in latest(p.seen).values()]
    return len(states) == size and all(
        s["state"] == "connected" and len(s["video"]) == size - 1 and min(s["video"].values()) > 0
        for s in states
    )


def video_counts(peers: list[PeerProcess]) -> dict[tuple[str, str], int]:
    """(receiver name, sender id) -> video packets received, as last reported."""
    return {
        (name, sender): count
        for p in peers
        for name, state in latest(p.seen).items()
        for sender, count in state["video"].items()
    }


async def test_twenty_participants_in_four_processes_share_one_udp_port_past_consent(
    sfu_server: SfuServer, room: str, tmp_path: Path
) -> None:
    assert sfu_server.process is not None
    size = PROCESSES * PER_PROCESS
    loop = asyncio.get_running_loop()
    started = loop.time()
    peers = []
    for k in range(PROCESSES):
        names = ",".join(f"p{k * PER_PROCESS + i}" for i in range(PER_PROCESS))
        args = ["--url", sfu_server.ws_url, "--room", room, "--names", names]
        args += ["--first-index", str(k * PER_PROCESS)]
        peers.append(
            await PeerProcess.start([], "tests.e2e.room_peers", f"peers{k}", args, tmp_path)
        )
    try:
        for peer in peers:  # each waits for all: the last one's wait is the room's
            await peer.wait_until(lambda _: flowing(peers, size), 120.0, "media between all")
        in_call = loop.time()
        print(f"\n{size} participants in a call {in_call - started:.1f} s after the first join")
        (address,) = udp_sockets(sfu_server.process.pid)
        ports = {port for p in peers for s in latest(p.seen).values() for port in s["ports"]}
        assert ports == {address[1]}

        before = video_counts(peers)
        await asyncio.sleep(HOLD)
        for peer in peers:  # a fresh report, after the hold
            reports = len(peer.seen.counters)
            await peer.wait_until(
                lambda seen, n=reports: len(seen.counters) > n,  # type: ignore[misc]
                10.0,
                "a report",
            )
        states = {n: s["state"] for p in peers for n, s in latest(p.seen).items()}
        assert set(states.values()) == {"connected"}, states
        after = video_counts(peers)
        stalled = [pair for pair, count in before.items() if after.get(pair, 0) <= count]
        assert not stalled, f"no video in the last {HOLD} s: {stalled}"
        assert udp_sockets(sfu_server.process.pid) == [address]
        # each packet received makes a copy per subscriber: they left together (sendmmsg)
        reads, read, calls, sent = await port_io(sfu_server)
        print(f"recvmmsg: {reads:.0f} calls read {read:.0f}; sendmmsg: {calls:.0f} sent {sent:.0f}")
        assert read >= reads > 0 and sent > 2 * calls
        lag = max(float(r["lag"]) for p in peers for r in p.seen.counters)
        print(f"held {loop.time() - in_call:.1f} s; client processes' worst loop lag {lag:.2f} s")
    finally:
        codes = await asyncio.gather(*(p.stop() for p in peers))
    assert codes == [0] * PROCESSES, [p.logs() for p in peers]


def hostile_datagrams() -> list[bytes]:
    # a STUN Binding request for a ufrag nobody holds (RFC 8445 §7.3: USERNAME is LOCAL:REMOTE)
    stun = Message(Method.BINDING, Class.REQUEST, attributes={"USERNAME": "nobody00:stranger"})
    # an RTP packet (RFC 3550 §5.1) from an address no ICE check authenticated
    rtp = struct.pack("!BBHII", 0x80, 96, 1, 1000, 0x1234ABCD) + bytes(100)
    noise = [bytes([64 + n]) + os.urandom(40) for n in range(5)]  # 64..127: none of RFC 7983's
    return [bytes(stun), rtp, *noise]


async def test_a_room_churns_and_a_stranger_is_ignored_on_one_udp_port(
    sfu_server: SfuServer, clients: list[SfuClient], room: str
) -> None:
    assert sfu_server.process is not None
    made = clients  # all that joined, for the fixture to close
    clients = [await join(sfu_server, made, room, i) for i in range(PARTICIPANTS)]
    await asyncio.gather(*(c.wait_for_subscriptions(TIMEOUT) for c in clients))
    await assert_media_flows(clients)

    # one socket per ICE host address (the tests pin 127.0.0.1), whatever the room's size
    (address,) = udp_sockets(sfu_server.process.pid)
    assert address[0] == "127.0.0.1"
    candidate_ports = {
        int(port)
        for c in clients
        for port in re.findall(
            r"candidate:\S+ 1 udp \d+ \S+ (\d+) typ host", c.pc.remoteDescription.sdp
        )
    }
    assert candidate_ports == {address[1]}

    # churn: some leave, as many join, and media flows between all who are there
    for client in clients[:LEAVERS]:
        await client.leave()
    clients = clients[LEAVERS:] + [
        await join(sfu_server, made, room, PARTICIPANTS + i) for i in range(LEAVERS)
    ]
    await asyncio.gather(*(c.wait_for_subscriptions(TIMEOUT) for c in clients))
    await assert_media_flows(clients)
    assert udp_sockets(sfu_server.process.pid) == [address]

    # a stranger: nothing comes back, each datagram is counted, the call goes on
    counted = await unroutable(sfu_server)
    datagrams = hostile_datagrams()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.setblocking(False)
        for datagram in datagrams:
            stranger.sendto(datagram, address)
        await asyncio.sleep(1.0)
        with pytest.raises(BlockingIOError):
            stranger.recv(2048)
    after = await unroutable(sfu_server)
    assert after["stun"] >= counted.get("stun", 0) + 1
    assert after["media"] >= counted.get("media", 0) + 1
    assert after["other"] >= counted.get("other", 0) + len(datagrams) - 2
    await assert_media_flows(clients)
