"""One call of the node failover benchmark, run in the clients' network namespace by
:mod:`benchmarks.failover_node` (a process cannot move its event loop into a namespace, so the
clients are a process of their own there).

``--clients`` participants join ``--room``, participant *i* through the *i*-th ``--url`` (mod
their number) and then the others in turn, each sending a marker video and decoding the
others' (:func:`benchmarks.failover.start_call`). JSON lines on stdout, as benchmarks.peers:
``{"event": "ready", "urls": [...]}`` once every one decoded every other (the URL each joined
through); then, told ``{"cmd": "killed", "t0": T}`` on stdin (T: ``time.monotonic()`` of the
kill, one clock for every process of the machine), ``{"event": "result", "seconds": [...],
"errors": [...], "rejoins": N, "urls": [...]}`` as :func:`benchmarks.failover.first_frame_after`
measures, and it leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from benchmarks.failover import close_all, first_frame_after, start_call
from benchmarks.peers import emit
from sfu.media.aiortc_bridge import set_ice_host_addresses


def entries(urls: Sequence[str], clients: int) -> list[list[str]]:
    """Per participant its URL list: its own node first, then the next ones."""
    return [list(urls[i % len(urls) :]) + list(urls[: i % len(urls)]) for i in range(clients)]


async def main(args: argparse.Namespace) -> None:
    set_ice_host_addresses([args.ice_host])
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    call = await start_call(entries(args.url, args.clients), args.room)
    try:
        emit("ready", urls=[c.urls[0] for c in call])
        command = json.loads(await commands.readline() or "{}")
        if command.get("cmd") != "killed":  # "stop", or the benchmark is gone: no kill came
            return
        t0 = float(command["t0"])
        waits = await asyncio.gather(
            *(first_frame_after(c, t0, args.timeout) for c in call), return_exceptions=True
        )
        emit(
            "result",
            seconds=[w if isinstance(w, float) else None for w in waits],
            errors=[str(w) for w in waits if isinstance(w, BaseException)],
            rejoins=sum(c.rejoins for c in call),
            urls=[c.urls[0] for c in call],
        )
    finally:
        await close_all(call)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", action="append", required=True, help="repeatable: the nodes")
    parser.add_argument("--room", required=True)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--ice-host", required=True, help="the one address to gather on")
    parser.add_argument("--timeout", type=float, default=30.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
