"""Several participants of one room in a process of their own (``python -m
tests.e2e.room_peers``, started by ``peer_process.PeerProcess``): a room larger than one test
process carries.

Twenty aiortc clients in one Python process on two cores fall behind their sockets: asyncio
reads one datagram per socket and loop iteration, so a STUN consent response waits behind
media for longer than aioice's 0.5 s transaction timeout, every consent check fails, and after
six (30 s, RFC 7675) each client closes its connection itself. Browsers are a process each;
spreading the room over a few processes keeps the test about the server.

Each ``--names`` entry joins ``--room`` through the ``--url`` given (several: nodes of one
cluster, tried in order, the next taken when a node is gone) and publishes a marker video
(every ``--audio-every``-th a tone too). Reported (``peer_process``'s JSON lines, ``e`` being):
``rx`` every ``--report-interval`` s: per participant name its ``id``, its connection's ``state``,
the server ports its remote description offers (``ports``), the URL it is joined through
(``url``), how often it joined again after losing its session (``rejoins``) and, per remote
participant id, the video RTP packets received from it (``video``); and the event loop's
longest late wake-up (``lag``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import Any

from aiortc import MediaStreamTrack

from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu_client import PALETTE, TONES, MarkerVideoTrack, SfuClient, ToneAudioTrack
from tests.e2e.peer_process import emit, loop_lag, run_until_quit

REPORT_INTERVAL = 1.0
LAG_PERIOD = 0.05
HOST_PORT = re.compile(r"candidate:\S+ 1 udp \d+ \S+ (\d+) typ host")


async def join(urls: list[str], room: str, name: str, index: int, audio_every: int) -> SfuClient:
    # frames handed over as decoded: no playout task per received video
    client = await SfuClient.connect(urls, room, name, playout_delay=False)
    tracks: list[tuple[MediaStreamTrack, str]] = [
        (MarkerVideoTrack(PALETTE[index % len(PALETTE)], 96, 64, 4), "camera")
    ]
    if audio_every and index % audio_every == 0:
        tracks.append((ToneAudioTrack(TONES[index % len(TONES)]), "microphone"))
    await client.publish_many(tracks)
    return client


async def video_packets(client: SfuClient) -> dict[str, int]:
    """Video RTP packets received per remote participant, from aiortc's inbound-rtp stats."""
    by_mid = {t.mid: t for t in client.pc.getTransceivers()}
    counts: dict[str, int] = {}
    for remote in client.remote_tracks.values():
        transceiver = by_mid.get(remote.mid)
        if remote.kind != "video" or not remote.active or transceiver is None:
            continue
        report = await transceiver.receiver.getStats()
        counts[remote.participant_id] = sum(
            getattr(s, "packetsReceived", 0) for s in report.values() if s.type == "inbound-rtp"
        )
    return counts


async def report(clients: dict[str, SfuClient], interval: float) -> None:
    while True:
        lag = await loop_lag(LAG_PERIOD, max(1, round(interval / LAG_PERIOD)))
        state: dict[str, Any] = {}
        for name, client in clients.items():
            remote = client.pc.remoteDescription
            state[name] = {
                "id": client.participant_id,
                "state": client.pc.connectionState,
                "ports": sorted({int(p) for p in HOST_PORT.findall(remote.sdp if remote else "")}),
                "url": client.urls[0],
                "rejoins": client.rejoins,
                "video": await video_packets(client),
            }
        emit("rx", clients=state, lag=lag)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--url", required=True, action="append", help="repeatable: nodes")
    parser.add_argument("--room", required=True)
    parser.add_argument("--names", required=True, help="comma-separated participant names")
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--audio-every", type=int, default=0)
    parser.add_argument("--report-interval", type=float, default=REPORT_INTERVAL)
    parser.add_argument("--ice-host", default="127.0.0.1", help="the one address to gather on")
    args = parser.parse_args()
    set_ice_host_addresses([args.ice_host])
    clients: dict[str, SfuClient] = {}
    try:
        for offset, name in enumerate(args.names.split(",")):
            index = args.first_index + offset
            clients[name] = await join(args.url, args.room, name, index, args.audio_every)
        await run_until_quit(asyncio.create_task(report(clients, args.report_interval)))
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()), return_exceptions=True)
        for client in clients.values():
            for local in client.local_tracks.values():
                local.track.stop()


if __name__ == "__main__":
    asyncio.run(main())
