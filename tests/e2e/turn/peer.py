"""The peers of the TURN tests, each in a process of its own (in a network namespace):

``python -m tests.e2e.turn.peer publish URL ROOM``: publishes a marker video until a line
``quit`` on stdin (prints ``{"published": ID}`` once it does).

``python -m tests.e2e.turn.peer subscribe URL ROOM --ice-host ADDR --within S``: joins with no
ICE servers of its own (only those ``joined`` gives), waits up to S seconds for the publisher's
first decoded frame, leaves, and prints one JSON object: ``frame`` (seconds from opening the
WebSocket to that frame, or null; ``joined``, ``track`` and ``connected``: to those steps),
``joinedIceServers`` (how many ``joined`` carried), ``gathered`` (the types of its local
candidates), ``selected`` ([local, remote] types of the nominated pair, or null) and ``state``
(the peer connection's at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from typing import Any

from sfu.media.aiortc_bridge import selected_candidate_types
from sfu_client import SfuClient
from sfu_client.media import PALETTE, MarkerVideoTrack
from tests.e2e.peer_process import until_quit

CANDIDATE_TYPE = re.compile(r"^a=candidate:.* typ (\w+)", re.MULTILINE)


async def publish(url: str, room: str) -> None:
    client = await SfuClient.connect(url, room, "publisher", ice_hosts=["127.0.0.1"])
    try:
        local = await client.publish(MarkerVideoTrack(PALETTE[1], 320, 180, 15), "camera")
        print(json.dumps({"published": client.participant_id, "track": local.track_id}))
        sys.stdout.flush()
        await until_quit()
    finally:
        await client.close()


async def subscribe(url: str, room: str, ice_host: str, within: float) -> dict[str, Any]:
    started = time.monotonic()
    client = await SfuClient.connect(url, room, "subscriber", ice_hosts=[ice_host])
    result: dict[str, Any] = {"frame": None, "joinedIceServers": len(client.server_ice_servers)}
    result["joined"] = time.monotonic() - started
    try:
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(within - (time.monotonic() - started)):
                publisher = await client.wait_for_participant("publisher", within)
                remote = await client.wait_for_track(publisher.participant_id, "video", within)
                result["track"] = time.monotonic() - started
                await client.wait_connected(within)
                result["connected"] = time.monotonic() - started
                await remote.track.recv()
                result["frame"] = time.monotonic() - started
        local = client.pc.localDescription
        result["gathered"] = sorted(set(CANDIDATE_TYPE.findall(local.sdp))) if local else []
        selected = selected_candidate_types(client.pc)
        result["selected"] = None if selected is None else list(selected)
        result["state"] = client.pc.connectionState
        with contextlib.suppress(Exception):
            await client.leave()
    finally:
        await client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("publish", "subscribe"))
    parser.add_argument("url")
    parser.add_argument("room")
    parser.add_argument("--ice-host", default="127.0.0.1")
    parser.add_argument("--within", type=float, default=15.0)
    args = parser.parse_args()
    if args.role == "publish":
        asyncio.run(publish(args.url, args.room))
    else:
        result = asyncio.run(subscribe(args.url, args.room, args.ice_host, args.within))
        print(json.dumps(result))


if __name__ == "__main__":
    main()
