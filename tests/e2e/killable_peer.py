"""A participant in a process of its own, for tests that kill it: ``python -m
tests.e2e.killable_peer URL ROOM NAME`` joins, publishes a camera, prints ``ready`` with its
participant id once its media flows, and then waits to be killed (SIGKILL: no leave, no DTLS
close, nothing on the wire ever again)."""

from __future__ import annotations

import asyncio
import sys

from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu_client import PALETTE, MarkerVideoTrack, SfuClient


async def main(url: str, room: str, name: str) -> None:
    set_ice_host_addresses(["127.0.0.1"])
    client = await SfuClient.connect(url, room, name)
    await client.publish(MarkerVideoTrack(PALETTE[2], 160, 120, 15), "camera")
    await client.wait_connected(20.0)
    print(f"ready {client.participant_id}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
