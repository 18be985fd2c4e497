"""A soak: participants join and leave every second for a while; is the server where it started?

    .venv/bin/python -m benchmarks.soak --seconds 600        # issue 11's ten minutes
    .venv/bin/python -m benchmarks.soak --seconds 30 --stay 3  # a quick look

A fresh ``sfu serve`` on 127.0.0.1 (ICE pinned there), one observer that publishes a camera
and stays, and every ``--every`` seconds a new participant (a real aiortc peer in this process)
that joins, publishes a camera, stays ``--stay`` seconds and leaves — so ``stay / every`` are
in the room at once besides the observer. Every ``--sample`` seconds the server's RSS, file
descriptors and threads (/proc) and its event loop's tasks (``sfu_event_loop_tasks``) are
sampled. At the end, after everyone but the observer left and the server had ``--settle``
seconds (it collects and trims its heap 0.5 s after a leave: sfu/memory.py), the last sample is
compared with the first one taken in the same state. Saved as JSON in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from benchmarks.processes import REPO, Network, Process, start_aiosfu
from sfu_client import PALETTE, MarkerVideoTrack, SfuClient

RESULTS = REPO / "benchmarks" / "results"
ICE = ["127.0.0.1"]


@dataclass(frozen=True)
class Sample:
    t: float
    rss_mb: float
    fds: int
    threads: int
    tasks: int
    participants: int


async def sample(server: Process, metrics_url: str, started: float) -> Sample:
    status = Path(f"/proc/{server.pid}/status").read_text()  # noqa: ASYNC240 - procfs
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http, http.get(metrics_url) as response:
        text = await response.text()

    def value(name: str) -> int:
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        return int(float(found.group(1))) if found else -1

    return Sample(
        t=round(time.monotonic() - started, 1),
        rss_mb=round(rss / 1024, 1),
        fds=len(list(Path(f"/proc/{server.pid}/fd").iterdir())),  # noqa: ASYNC240
        threads=threads,
        tasks=value("sfu_event_loop_tasks"),
        participants=value("sfu_participants"),
    )


async def visit(url: str, n: int, stay: float, failures: list[str]) -> None:
    track = MarkerVideoTrack(PALETTE[n % len(PALETTE)], 160, 120, 15)
    client: SfuClient | None = None
    try:
        client = await SfuClient.connect(url, "soak", f"visitor{n}", ice_hosts=ICE)
        await client.publish(track, "camera")
        await client.wait_connected(20.0)
        await asyncio.sleep(stay)
    except Exception as exc:  # a failed visit is counted, the soak goes on
        failures.append(f"visitor{n}: {exc!r}")
    finally:
        if client is not None:
            await client.leave()
        track.stop()


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    server, url = start_aiosfu(Network(), workdir)
    metrics_url = url.replace("ws://", "http://").removesuffix("/ws") + "/metrics"
    started = time.monotonic()
    samples: list[Sample] = []
    failures: list[str] = []
    observer_track = MarkerVideoTrack(PALETTE[0], 160, 120, 15)
    try:
        observer = await SfuClient.connect(url, "soak", "observer", ice_hosts=ICE)
        await observer.publish(observer_track, "camera")
        await observer.wait_connected(20.0)
        await asyncio.sleep(args.settle)
        samples.append(await sample(server, metrics_url, started))
        visits: set[asyncio.Task[None]] = set()
        n = 0
        next_sample = time.monotonic() + args.sample
        while time.monotonic() - started < args.seconds:
            task = asyncio.create_task(visit(url, n, args.stay, failures))
            visits.add(task)
            task.add_done_callback(visits.discard)
            n += 1
            await asyncio.sleep(args.every)
            if time.monotonic() >= next_sample:
                samples.append(await sample(server, metrics_url, started))
                print(asdict(samples[-1]), flush=True)
                next_sample += args.sample
        await asyncio.gather(*visits)
        await asyncio.sleep(args.settle)
        samples.append(await sample(server, metrics_url, started))
        await observer.leave()
    finally:
        observer_track.stop()
        server.stop()
    first, last = samples[0], samples[-1]
    return {
        "meta": {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            **{k: v for k, v in vars(args).items() if k != "out"},
        },
        "visits": n,
        "failed_visits": failures,
        "samples": [asdict(s) for s in samples],
        "rss_growth_pct": round((last.rss_mb - first.rss_mb) / first.rss_mb * 100, 1),
        "back_where_it_started": {
            "fds": last.fds <= first.fds,
            "threads": last.threads <= first.threads,
            "tasks": last.tasks <= first.tasks,
            "participants": last.participants == first.participants,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long visitors come")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between visitors")
    parser.add_argument("--stay", type=float, default=5.0, help="seconds each visitor stays")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--settle", type=float, default=35.0, help="seconds before first/last")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiosfu-soak-") as tmp:
        document = asyncio.run(soak(args, Path(tmp)))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(document, indent=1))
    summary = {k: document[k] for k in ("visits", "rss_growth_pct", "back_where_it_started")}
    print(json.dumps(summary), f"{len(document['failed_visits'])} failed visits", "->", path)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
