"""The simulcast publisher of a shaped-link call, in a process of its own
(``python -m tests.e2e.shaped_publisher``, started by ``peer_process.PeerProcess``).

A process of its own, as a publisher is another machine: the test's process also runs the
churning and hostile participants, whose handshakes held the publisher's sending back by 100+
ms when they shared its event loop. It encodes the layers once (``shaped_link.simulcast_clips``),
joins, publishes them with ``PreEncodedLayers`` and reports (``peer_process``'s JSON lines):

- ``joined`` (``id``), ``published`` (``trackId``), ``closed`` (``reason``);
- ``tx`` every 0.5 s: per rid ``[packets sent, keyframes sent, active]`` and the event loop's
  longest late wake-up (``lag``).
"""

from __future__ import annotations

import argparse
import asyncio

from sfu_client import PreEncodedLayers, SfuClient
from sfu_client.simulcast import SimulcastPublisher
from tests.e2e.peer_process import emit, loop_lag, run_until_quit
from tests.e2e.shaped_link import FPS, simulcast_clips

REPORT_INTERVAL = 0.5


async def _run(args: argparse.Namespace) -> None:
    clips = simulcast_clips()  # seconds of CPU: before joining
    client = await SfuClient.connect(args.url, args.room, args.name, ice_hosts=[args.ice_host])
    emit("joined", id=client.participant_id)
    source = PreEncodedLayers(clips)
    try:
        local = await client.publish_simulcast(source, fps=FPS)
        emit("published", trackId=local.track_id)
        assert local.simulcast is not None
        await run_until_quit(asyncio.create_task(_report(local.simulcast)))
    finally:
        await client.leave()
        source.stop()
        emit("closed", reason=client.close_reason)


async def _report(simulcast: SimulcastPublisher) -> None:
    while True:
        lag = await loop_lag(0.05, round(REPORT_INTERVAL / 0.05))
        layers = {
            rid: [layer.packets_sent, layer.keyframes_sent, layer.active]
            for rid, layer in simulcast.layers.items()
        }
        emit("tx", layers=layers, lag=round(lag, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--ice-host", required=True)
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
