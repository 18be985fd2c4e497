"""One socket floods the signaling with 2,000 messages a second; how fast are the others answered?

Issue 12's target: others' signaling round trip p99 < 50 ms during such a flood. A fresh
``sfu serve`` on 127.0.0.1; ``--pingers`` other participants in the room each send a request
that gets a reply (``mute`` of a track nobody publishes: an ``error``) every 50 ms and time it.
Three phases of ``--seconds`` each: no flood; the flood against the server's default message
rate limit (signaling/ratelimit.py); the flood against a server whose limit is off
(``--message-rate`` 10^9). The flooder runs in its own process (``flood`` mode), so it does not
share the pingers' event loop. Numbers go to stdout and benchmarks/results/signaling-flood-*.json.

    .venv/bin/python -m benchmarks.signaling_flood --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from benchmarks.processes import REPO, Network, start_aiosfu

RESULTS = REPO / "benchmarks" / "results"
ROOM = "flood"
PING_INTERVAL = 0.05


@dataclass(frozen=True)
class Phase:
    name: str
    round_trips: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    flood_sent: int
    flood_answered: int


async def joined(
    http: aiohttp.ClientSession, url: str, name: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url)
    await ws.send_json({"type": "join", "v": 1, "room": ROOM, "name": name})
    while (await ws.receive_json())["type"] != "joined":
        pass
    return ws


async def ping(ws: aiohttp.ClientWebSocketResponse, until: float, rtts: list[float]) -> None:
    n = 0
    while time.monotonic() < until:
        n += 1
        sent = time.monotonic()
        await ws.send_json(
            {"type": "mute", "trackId": "TR_none", "muted": True, "requestId": str(n)}
        )
        while True:
            message = await ws.receive_json()
            if message.get("requestId") == str(n):
                break
        rtts.append(time.monotonic() - sent)
        await asyncio.sleep(max(0.0, PING_INTERVAL - (time.monotonic() - sent)))


async def flood(url: str, seconds: float, rate: int) -> None:
    """The flooder (its own process): ``rate`` messages a second; prints sent and answered."""
    async with aiohttp.ClientSession() as http:
        ws = await joined(http, url, "flooder")
        answered = 0

        async def read() -> None:
            nonlocal answered
            async for _ in ws:
                answered += 1

        reader = asyncio.create_task(read())
        sent, started = 0, time.monotonic()
        message = json.dumps({"type": "mute", "trackId": "TR_flood", "muted": True})
        while (elapsed := time.monotonic() - started) < seconds:
            while sent < elapsed * rate:
                await ws.send_str(message)
                sent += 1
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.5)
        reader.cancel()
        print(json.dumps({"sent": sent, "answered": answered}), flush=True)
        await ws.close()


async def phase(name: str, url: str, args: argparse.Namespace, flooding: bool) -> Phase:
    async with aiohttp.ClientSession() as http:
        pingers = [await joined(http, url, f"p{i}") for i in range(args.pingers)]
        flooder = None
        if flooding:
            flooder = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.signaling_flood", "flood", url,
                str(args.seconds), str(args.rate), stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            await asyncio.sleep(1.0)  # the flood is on
        rtts: list[float] = []
        until = time.monotonic() + args.seconds - (1.5 if flooding else 0)
        await asyncio.gather(*(ping(ws, until, rtts) for ws in pingers))
        counts = {"sent": 0, "answered": 0}
        if flooder is not None:
            out, _ = await flooder.communicate()
            counts = json.loads(out.decode().strip().splitlines()[-1])
        for ws in pingers:
            await ws.close()
    ms = sorted(r * 1000 for r in rtts)
    return Phase(
        name,
        len(ms),
        round(statistics.median(ms), 2),
        round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        round(ms[-1], 2),
        counts["sent"],
        counts["answered"],
    )


async def run(args: argparse.Namespace) -> list[Phase]:
    phases = []
    for name, options, flooding in (
        ("no flood", (), False),
        ("flood, default rate limit", (), True),
        ("flood, no rate limit", ("--message-rate", "1e9", "--message-burst", "1e9"), True),
    ):
        with tempfile.TemporaryDirectory() as workdir:
            server, url = start_aiosfu(Network(), Path(workdir), options=options)
            try:
                result = await phase(name, url, args, flooding)
            finally:
                server.stop()
        print(
            f"{result.name:28} others' round trip p50 {result.p50_ms:6.2f} ms  p99 "
            f"{result.p99_ms:6.2f} ms  max {result.max_ms:7.2f} ms  ({result.round_trips} trips;"
            f" flood sent {result.flood_sent}, answered {result.flood_answered})"
        )
        phases.append(result)
    return phases


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "flood":
        asyncio.run(flood(sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--rate", type=int, default=2000, help="the flood's messages a second")
    parser.add_argument("--pingers", type=int, default=5, help="other participants timing")
    args = parser.parse_args()
    phases = asyncio.run(run(args))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = RESULTS / f"signaling-flood-{stamp}.json"
    path.write_text(
        json.dumps({"args": vars(args), "phases": [asdict(p) for p in phases]}, indent=1)
    )
    print(f"results: {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
