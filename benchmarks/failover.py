"""Failover: how long a call goes without video when its room's worker, or node, is killed.

    .venv/bin/python -m benchmarks.failover --kill worker --trials 10
    .venv/bin/python -m benchmarks.failover --kill node --trials 10    (root: namespaces)

``--kill worker`` starts ``sfu serve --workers 2 --udp-port 0`` on 127.0.0.1. Each trial is a
call of ``--clients`` participants in a room of its own, every one sending video (a marker
track, VP8) and receiving the others'. Once each has decoded a frame of every other, the worker
hosting the room (its pid from /healthz) gets SIGKILL at t0: the clients are told
``bye reconnect``, join again by themselves, and the room opens on a live worker. Measured per
client: t0 to its first frame decoded on a video track offered after t0 (frames still on their
way from before the kill do not count). The median and the maximum over every client of every
trial are printed and saved as ``failover-<time>.json``. ``--kill node``: a cluster in
network namespaces, the room's node killed (:mod:`benchmarks.failover_node`), measured the same
way. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiortc.mediastreams import MediaStreamError

from benchmarks.processes import REPO, Network, start_aiosfu
from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu_client import PALETTE, MarkerVideoTrack, RemoteTrack, SfuClient

RESULTS = REPO / "benchmarks" / "results"
WORKERS = 2
SETTLE_TIMEOUT = 30.0  # for the call to start, and for the server to have both workers again
POLL = 0.1
TRACK_POLL = 0.02  # for a client's new tracks: a frame queued before we read it shows late


async def health(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/healthz") as response:
        report: dict[str, Any] = await response.json()
        return report


async def until(check: Any, what: str, timeout: float = SETTLE_TIMEOUT) -> Any:  # noqa: ASYNC109
    """The first true value of ``await check()``, polled."""
    deadline = time.monotonic() + timeout
    while not (found := await check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        await asyncio.sleep(POLL)
    return found


async def room_worker(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """The worker hosting the trial's room, once /healthz counts it (the only room)."""

    async def only_room() -> dict[str, Any] | None:
        workers = (await health(http, url)).get("workers", [])
        hosting = [w for w in workers if w.get("rooms")]
        return hosting[0] if len(hosting) == 1 and hosting[0]["rooms"] == 1 else None

    found: dict[str, Any] = await until(only_room, "single room in /healthz")
    return found


async def all_up(http: aiohttp.ClientSession, url: str) -> bool:
    """Every worker up and no room left: the server is as at the start."""
    report = await health(http, url)
    workers = report.get("workers", [])
    return (
        report["status"] == "ok"
        and len(workers) == WORKERS
        and all(w["up"] and not w.get("rooms") for w in workers)
    )


async def start_call(urls: Sequence[str | Sequence[str]], room: str) -> list[SfuClient]:
    """A participant per entry of ``urls`` (its URL, or its list of nodes' URLs), each sending
    video, once each decoded every other's."""
    call: list[SfuClient] = []
    try:
        for index, url in enumerate(urls):
            client = await SfuClient.connect(url, room, f"p{index}", playout_delay=False)
            call.append(client)
            await client.publish(MarkerVideoTrack(PALETTE[index % len(PALETTE)]), source="camera")
        for client in call:
            for other in call:
                if other is not client and other.participant_id is not None:
                    remote = await client.wait_for_track(other.participant_id, "video")
                    await asyncio.wait_for(remote.track.recv(), SETTLE_TIMEOUT)
    except BaseException:
        await close_all(call)
        raise
    return call


async def close_all(call: Sequence[SfuClient]) -> None:
    await asyncio.gather(*(c.close() for c in call), return_exceptions=True)
    for client in call:
        for local in client.local_tracks.values():
            local.track.stop()


async def _frame_time(remote: RemoteTrack) -> float:
    await remote.track.recv()
    return time.monotonic()


async def first_frame_after(client: SfuClient, t0: float, timeout: float) -> float:  # noqa: ASYNC109
    """Seconds from ``t0`` to ``client``'s first frame decoded on a video track offered after
    ``t0`` (the remote tracks of its new connection after it joined again)."""
    reading: dict[int, asyncio.Task[float]] = {}  # id of the RemoteTrack -> its first frame
    try:
        while time.monotonic() < t0 + timeout:
            for remote in client.remote_tracks.values():
                if remote.kind == "video" and remote.offered_at > t0 and id(remote) not in reading:
                    reading[id(remote)] = asyncio.ensure_future(_frame_time(remote))
            waiting = [t for t in reading.values() if not t.done()]
            if not waiting:  # not joined again yet
                await asyncio.sleep(TRACK_POLL)
                continue
            done, _ = await asyncio.wait(waiting, timeout=TRACK_POLL, return_when="FIRST_COMPLETED")
            for task in done:
                with contextlib.suppress(MediaStreamError):  # that track ended: keep waiting
                    return task.result() - t0
        raise TimeoutError(f"{client.name}: no frame within {timeout} s of the kill")
    finally:
        for task in reading.values():
            task.cancel()


async def trial(
    http: aiohttp.ClientSession,
    url: str,
    index: int,
    clients: int,
    timeout: float,  # noqa: ASYNC109
) -> dict[str, Any]:
    """One call, its worker killed; per client the seconds to its next frame (None: none
    within ``timeout``)."""
    await until(lambda: all_up(http, url), "server with every worker up and no room")
    call = await start_call([url + "/ws"] * clients, f"failover-{index}")
    try:
        worker = await room_worker(http, url)
        t0 = time.monotonic()
        os.kill(worker["pid"], signal.SIGKILL)
        waits = await asyncio.gather(
            *(first_frame_after(c, t0, timeout) for c in call), return_exceptions=True
        )
        rejoined = sum(c.rejoins for c in call)
    finally:
        await close_all(call)
    seconds = [w if isinstance(w, float) else None for w in waits]
    errors = [str(w) for w in waits if isinstance(w, BaseException)]
    return {
        "trial": index,
        "worker": worker["index"],
        "pid": worker["pid"],
        "seconds": seconds,
        "rejoins": rejoined,
        "errors": errors,
    }


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    started = datetime.now(UTC)
    options = ("--workers", str(WORKERS), "--udp-port", "0")
    server, ws_url = start_aiosfu(Network(), workdir, options=options)
    url = ws_url.replace("ws://", "http://").removesuffix("/ws")
    trials = []
    set_ice_host_addresses(["127.0.0.1"])  # the clients' candidates: loopback only
    try:
        async with aiohttp.ClientSession() as http:
            for index in range(args.trials):
                result = await trial(http, url, index, args.clients, args.timeout)
                shown = ", ".join("-" if s is None else f"{s:.2f}" for s in result["seconds"])
                print(
                    f"  trial {index + 1}: worker {result['worker']} (pid {result['pid']}) "
                    f"killed; next frame after {shown} s",
                    flush=True,
                )
                trials.append(result)
                if not server.alive():
                    raise RuntimeError(f"sfu serve exited\n{server.logs()}")
    finally:
        set_ice_host_addresses([])
        server.stop()
    return {
        "meta": meta(args, started, workers=WORKERS),
        "trials": trials,
        "summary": summarize(trials),
    }


def summarize(trials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median and max over every client of every trial (``seconds``, None: no frame)."""
    waits = [s for t in trials for s in t["seconds"] if s is not None]
    missing = sum(s is None for t in trials for s in t["seconds"])
    return {
        "clients_measured": len(waits),
        "clients_without_frame": missing,
        "median_s": statistics.median(waits) if waits else None,
        "max_s": max(waits, default=None),
    }


def meta(args: argparse.Namespace, started: datetime, **setup: Any) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "started": started.isoformat(timespec="seconds"),
        "commit": commit,
        "kill": args.kill,
        **setup,
        "clients": args.clients,
        "trials": args.trials,
        "timeout": args.timeout,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--kill",
        choices=("worker", "node"),
        default="worker",
        help="what is killed: the room's worker process, or its node (sfu serve --redis) of a "
        "cluster in network namespaces (needs root)",
    )
    parser.add_argument(
        "--nodes", type=int, default=2, help="--kill node: nodes of the cluster (2 to 9)"
    )
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--clients", type=int, default=2, help="participants of each call")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds a client may go without a frame"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--logs", type=Path, help="keep the server's output here")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.clients < 2 or args.timeout <= 0 or not 2 <= args.nodes <= 9:
        parser.error("--trials must be ≥ 1, --clients ≥ 2, --timeout > 0 and --nodes 2 to 9")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aiosfu-failover-") as tmp:
        workdir = args.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.kill == "node":
            from benchmarks import failover_node  # it imports this module

            document = failover_node.measure(args, workdir)
        else:
            document = asyncio.run(measure(args, workdir))
    summary = document["summary"]
    if summary["median_s"] is not None:
        print(
            f"{args.kill} killed → next frame: median {summary['median_s']:.2f} s, "
            f"max {summary['max_s']:.2f} s over {summary['clients_measured']} clients "
            f"of {args.trials} trials ({summary['clients_without_frame']} got none)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"failover-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(document, indent=1) + "\n")
    print(f"saved: {path}")
    return document


if __name__ == "__main__":
    sys.exit(1 if main()["summary"]["clients_without_frame"] else 0)
