"""Server memory through churn: waves of joiners that publish and leave, sequential vs concurrent.

    .venv/bin/python -m benchmarks.churn                      # 3 waves of 20, twice, both modes
    .venv/bin/python -m benchmarks.churn --modes concurrent --waves 2 --joiners 4 --quick

For each mode a fresh server runs as ``python -m benchmarks.memory_probe serve`` (tracemalloc
off unless ``--tracemalloc``), on 127.0.0.1 with ICE pinned there. A wave: ``--joiners``
participants (real aiortc peers in one client process, benchmarks/memory_clients.py) join one
room, publish a microphone and a camera, connect and receive everyone else's tracks, send
``--media-seconds`` of pre-generated audio and VP8-shaped packets, and leave. In the
``concurrent`` mode all of a wave join at once and leave at once; in ``sequential`` one after
another. The waves run ``--runs`` times on the same server: a leak grows again with each run,
memory the allocators kept for reuse mostly does not.

Samples (after startup, at each wave's peak, after each wave left): RSS and RssAnon from /proc,
and the probe's census (benchmarks/heap.py): live objects of the participant's classes, gc
objects, pymalloc and malloc bytes in use and kept free. The last sample also trims malloc
(``malloc_trim(0)``) and records what that gave back. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import memory_probe
from benchmarks.memory import (
    ProbeReader,
    client_command,
    machine,
    participants_metric,
    save,
    server_memory,
)
from benchmarks.memory import parse_args as memory_args
from benchmarks.processes import (
    REPO,
    Network,
    PeerProcess,
    Process,
    start_aiosfu,
    stop_on_sigterm,
)

RESULTS = REPO / "benchmarks" / "results"
JOIN_TIMEOUT = 300.0
LEAVE_TIMEOUT = 60.0
ROOM = "churn"
MODES = ("sequential", "concurrent")


@dataclass(frozen=True, slots=True)
class Options:
    modes: tuple[str, ...]
    waves: int
    joiners: int
    runs: int
    media_seconds: float
    settle: float
    tracemalloc: int  # frames; 0: off
    out: Path
    logs: Path | None


def start_probe_server(network: Network, workdir: Path, frames: int) -> tuple[Process, str]:
    """``sfu serve`` under benchmarks/memory_probe.py, tracemalloc keeping ``frames`` (0: off)."""
    saved = os.environ.get(memory_probe.FRAMES_ENV)
    os.environ[memory_probe.FRAMES_ENV] = str(frames)
    try:
        return start_aiosfu(network, workdir, "benchmarks.memory_probe")
    finally:
        if saved is None:
            del os.environ[memory_probe.FRAMES_ENV]
        else:
            os.environ[memory_probe.FRAMES_ENV] = saved


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 2)


def summarize_census(
    document: dict[str, Any], baseline: dict[str, int] | None = None
) -> dict[str, Any]:
    """A sample's census; ``alive``: instances of the participant's classes beyond ``baseline``
    (the server's own at startup: its tasks, contexts and loggers)."""
    census = document["census"]
    pymalloc, malloc = census.get("pymalloc", {}), census.get("malloc", {})
    base = baseline or {}
    row: dict[str, Any] = {
        "gc_objects": census["gc_objects"],
        "allocated_blocks": census["allocated_blocks"],
        "watched": census["watched"],
        "alive": {
            name.rsplit(".", 1)[1]: n - base.get(name, 0)
            for name, n in census["watched"].items()
            if n != base.get(name, 0)
        },
        "pymalloc_live_mb": _mb(pymalloc.get("allocated_bytes")),
        # free blocks in used pools + unused pools: mapped arenas that hold no object
        "pymalloc_free_mb": (
            _mb(pymalloc["free_bytes"] + pymalloc.get("unused_pool_bytes", 0))
            if "free_bytes" in pymalloc
            else None
        ),
        "pymalloc_arenas": pymalloc.get("arenas"),
        "malloc_in_use_mb": _mb(malloc.get("in_use_bytes")),
        "malloc_free_mb": _mb(malloc.get("free_bytes")),
        "types_vs_baseline": census.get("types_vs_baseline", [])[:15],
        "modules_imported_since_baseline": census.get("modules_imported_since_baseline", []),
        "census_seconds": document["snapshot_seconds"],
    }
    if "traced_bytes" in document:
        row["traced_mb"] = _mb(document["traced_bytes"])
    trim = document.get("trim")
    if trim:
        row["rss_after_trim_mb"] = round(trim["rss_after_kb"] / 1024, 1)
        row["trim_returned_mb"] = round((trim["rss_before_kb"] - trim["rss_after_kb"]) / 1024, 1)
    return row


class ModeRun:
    """One server, ``waves`` waves ``runs`` times, in one mode."""

    def __init__(self, options: Options, mode: str, workdir: Path) -> None:
        self.options = options
        self.mode = mode
        self.workdir = workdir
        self.network = Network()
        self.samples: list[dict[str, Any]] = []
        self.waves: list[dict[str, Any]] = []
        self.started = time.monotonic()

    def sample(
        self, server: Process, probe: ProbeReader, url: str, phase: str, trim: bool = False
    ) -> None:
        time.sleep(self.options.settle)
        memory = server_memory(server.pid)  # before the census: its collection frees garbage
        baseline = self.samples[0]["watched"] if self.samples else None
        census = summarize_census(probe.snapshot(trim), baseline)
        row = {
            "phase": phase,
            "at_s": round(time.monotonic() - self.started, 1),
            "server_participants": participants_metric(self.network, url),
            **memory,
            **census,
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        self.samples.append(row)
        alive = ", ".join(f"{k} {v}" for k, v in row["alive"].items()) or "none"
        print(
            f"  {self.mode:>10} {phase:<14} RSS {row['rss_mb']:6.1f} MB  "
            f"pymalloc {row['pymalloc_live_mb']} live + {row['pymalloc_free_mb']} free MB  "
            f"malloc {row['malloc_in_use_mb']} + {row['malloc_free_mb']} free MB  "
            f"gc objects {row['gc_objects']:,}  alive: {alive}",
            flush=True,
        )

    def execute(self) -> dict[str, Any]:
        options = self.options
        server, url = start_probe_server(self.network, self.workdir, options.tracemalloc)
        probe = ProbeReader(server)
        clients: PeerProcess | None = None
        concurrency = options.joiners if self.mode == "concurrent" else 1
        try:
            self.sample(server, probe, url, "baseline")
            clients = PeerProcess(
                f"clients-{self.mode}", client_command(memory_args([]), url), self.workdir
            )
            clients.wait_event("ready", 60.0)
            for run in range(1, options.runs + 1):
                for wave in range(1, options.waves + 1):
                    label = f"r{run}w{wave}"
                    clients.command(
                        cmd="join", rooms=[[ROOM, options.joiners]], concurrency=concurrency
                    )
                    joined = clients.wait_event("joined", JOIN_TIMEOUT)
                    for failure in joined["failed"]:
                        print(f"  failed: {failure}", flush=True)
                    if options.media_seconds > 0:
                        clients.command(cmd="media", rooms=[ROOM])
                        clients.wait_event("media", 60.0)
                        time.sleep(options.media_seconds)
                    self.sample(server, probe, url, f"{label} joined")
                    clients.command(cmd="leave", rooms=[ROOM], concurrency=concurrency)
                    left = clients.wait_event("left", LEAVE_TIMEOUT)
                    self._wait_empty(url)
                    self.waves.append(
                        {
                            "wave": label,
                            "connected": joined["connected"],
                            "join_seconds": joined["seconds"],
                            "leave_seconds": left["seconds"],
                            "failed": joined["failed"],
                        }
                    )
                    last = run == options.runs and wave == options.waves
                    self.sample(server, probe, url, f"{label} left")
                    if last:
                        self.sample(server, probe, url, "end, trimmed", trim=True)
            return {
                "mode": self.mode,
                "concurrency": concurrency,
                "waves": self.waves,
                "samples": self.samples,
                "summary": summarize(self.samples, options),
            }
        finally:
            if clients is not None:
                clients.stop()
            server.stop()
            probe.remove()

    def _wait_empty(self, url: str) -> None:
        """Until the server holds no participant (it notices closed sockets at once)."""
        deadline = time.monotonic() + LEAVE_TIMEOUT
        while time.monotonic() < deadline:
            if participants_metric(self.network, url) == 0:
                return
            time.sleep(0.2)
        print("  warning: participants still in the server after leaving", flush=True)


def summarize(samples: list[dict[str, Any]], options: Options) -> dict[str, Any]:
    """RSS growth baseline → after each run, and the live participant objects left at the end."""
    baseline = samples[0]
    per_run = [
        s for s in samples if s["phase"].endswith(f"w{options.waves} left")
    ]  # the last wave of each run
    end = samples[-1]
    return {
        "baseline_rss_mb": round(baseline["rss_mb"], 1),
        "peak_rss_mb": round(max(s["rss_mb"] for s in samples), 1),
        "rss_growth_after_run_mb": [round(s["rss_mb"] - baseline["rss_mb"], 1) for s in per_run],
        "pymalloc_live_growth_after_run_mb": [
            _growth(s, baseline, "pymalloc_live_mb") for s in per_run
        ],
        "malloc_in_use_growth_after_run_mb": [
            _growth(s, baseline, "malloc_in_use_mb") for s in per_run
        ],
        "gc_objects_growth_after_run": [s["gc_objects"] - baseline["gc_objects"] for s in per_run],
        "alive_at_end": end["alive"],
        "rss_after_trim_mb": end.get("rss_after_trim_mb"),
        "trim_returned_mb": end.get("trim_returned_mb"),
        "rss_growth_after_trim_mb": (
            round(end["rss_after_trim_mb"] - baseline["rss_mb"], 1)
            if end.get("rss_after_trim_mb") is not None
            else None
        ),
    }


def _growth(sample: dict[str, Any], baseline: dict[str, Any], key: str) -> float | None:
    """None when the allocator is not there (PYTHONMALLOC=malloc: no pymalloc)."""
    if sample.get(key) is None or baseline.get(key) is None:
        return None
    return round(float(sample[key]) - float(baseline[key]), 2)


def tables(document: dict[str, Any]) -> str:
    lines = []
    for result in document["results"]:
        s = result["summary"]
        lines += [
            "",
            f"{result['mode']} churn ({document['waves']} waves of {document['joiners']}, "
            f"{document['runs']} runs): RSS {s['baseline_rss_mb']} MB at start, peak "
            f"{s['peak_rss_mb']} MB; growth after each run {s['rss_growth_after_run_mb']} MB "
            f"(after malloc_trim: {s['rss_growth_after_trim_mb']} MB); live objects of a "
            f"participant's classes at the end: {s['alive_at_end'] or 'none'}",
            "",
            "| phase | RSS MB | RssAnon MB | pymalloc live / free MB | arenas "
            "| malloc in use / free MB | gc objects | participant objects alive |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in result["samples"]:
            alive = ", ".join(f"{k} {v}" for k, v in row["alive"].items()) or "none"
            rss = f"{row['rss_mb']:.1f}"
            if "rss_after_trim_mb" in row:
                rss += f" → {row['rss_after_trim_mb']} trimmed"
            lines.append(
                f"| {row['phase']} | {rss} | {row['rss_anon_mb']:.1f} | "
                f"{row['pymalloc_live_mb']} / {row['pymalloc_free_mb']} | "
                f"{row['pymalloc_arenas']} | {row['malloc_in_use_mb']} / {row['malloc_free_mb']} "
                f"| {row['gc_objects']:,} | {alive} |"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--modes", default=",".join(MODES), help="sequential,concurrent")
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--joiners", type=int, default=20, help="participants per wave")
    parser.add_argument("--runs", type=int, default=2, help="the waves, again on the same server")
    parser.add_argument("--media-seconds", type=float, default=3.0, help="media per wave")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before each sample")
    parser.add_argument(
        "--tracemalloc", type=int, default=0, help="frames per allocation (0: tracemalloc off)"
    )
    parser.add_argument("--quick", action="store_true", help="--settle 0.5 --media-seconds 1")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--logs", type=Path, help="keep the processes' output here")
    args = parser.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    if args.waves < 1 or args.joiners < 2 or args.runs < 1:
        parser.error("need at least 1 wave of 2 joiners and 1 run")
    return Options(
        modes=modes,
        waves=args.waves,
        joiners=args.joiners,
        runs=args.runs,
        media_seconds=1.0 if args.quick else args.media_seconds,
        settle=0.5 if args.quick else args.settle,
        tracemalloc=max(0, args.tracemalloc),
        out=args.out,
        logs=args.logs,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    options = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop_on_sigterm)
    started = datetime.now(UTC)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="aiosfu-churn-") as tmp:
        for mode in options.modes:
            workdir = (options.logs or Path(tmp)) / mode
            workdir.mkdir(parents=True, exist_ok=True)
            results.append(ModeRun(options, mode, workdir).execute())
    meta = machine(memory_args([]), started)
    for key in (
        "server_module",
        "tracemalloc",
        "steps",
        "media_steps",
        "settle_s",
        "media_seconds",
        "client_processes",
    ):
        meta.pop(key, None)
    document = {
        "meta": {**meta, "server_module": "benchmarks.memory_probe", "settle_s": options.settle},
        "waves": options.waves,
        "joiners": options.joiners,
        "runs": options.runs,
        "media_seconds": options.media_seconds,
        "tracemalloc_frames": options.tracemalloc,
        "results": results,
    }
    path = save(document, options.out, "churn")
    print(tables(document))
    print(f"saved: {path}")
    return document


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
