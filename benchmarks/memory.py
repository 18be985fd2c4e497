"""Server memory and threads per connected participant: ``sfu serve`` with 100+ real peers.

    .venv/bin/python -m benchmarks.memory                       # 120 participants, rooms of 4
    .venv/bin/python -m benchmarks.memory --tracemalloc         # + where the memory goes
    .venv/bin/python -m benchmarks.memory --participants 4 --room-size 2 --steps 2 --quick

The server runs as its own process on 127.0.0.1 (ICE pinned to 127.0.0.1, no ICE servers). Its
RSS (/proc/PID/status VmRSS, RssAnon), PSS (/proc/PID/smaps_rollup) and thread count are read
after startup, then after each step that connects more rooms of participants (each a real aiortc
peer connection through the WebSocket signaling, connected over ICE + DTLS, publishing audio and
video, subscribed to everyone else in its room) while nobody sends media ("idle"), then again
after each step that turns on the media of those rooms' publishers (audio 50 packets/s, low-rate
VP8-shaped video) for ``--media-seconds`` ("media"), long enough for the server's per-track
packet histories to fill. Linear fits give MB per participant, idle and with media. With
``--tracemalloc`` the server runs under benchmarks/memory_probe.py and the allocation sites that
grew while participants joined and while media flowed are listed, per participant.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import memory_probe, metrics
from benchmarks.processes import (
    REPO,
    Network,
    PeerProcess,
    Process,
    busy_cpu_seconds,
    cpu_seconds,
    start_aiosfu,
    status_field,
    stop_on_sigterm,
)

RESULTS = REPO / "benchmarks" / "results"
JOIN_TIMEOUT = 300.0
PROBE_TIMEOUT = 120.0
TARGET_MB = 0.5  # the target: server RSS per connected participant
STOCK_AIORTC_MB = 0.38  # the measurement of stock aiortc, per idle connection


@dataclass(frozen=True, slots=True)
class Options:
    participants: int
    room_size: int
    steps: int
    media_steps: int  # 0: all
    client_processes: int
    settle: float
    media_seconds: float
    audio_payload: int
    video_kbps: float
    video_payload: int
    fps: int
    tracemalloc: bool
    server_module: str
    out: Path
    logs: Path | None

    @property
    def video_rate(self) -> int:
        """Video packets/s: ``--video-kbps`` of ``--video-payload``-byte packets (RTP header in)."""
        return max(self.fps, round(self.video_kbps * 1000 / 8 / (self.video_payload + 12)))

    def rooms(self) -> list[tuple[str, int]]:
        """(name, size): full rooms of ``room_size``, the remainder in a last smaller room."""
        count = math.ceil(self.participants / self.room_size)
        sizes = [self.room_size] * count
        if count and self.participants % self.room_size:
            sizes[-1] = self.participants % self.room_size
        return [(f"mem-{i}", size) for i, size in enumerate(sizes)]


# --- the server, from /proc ---


def smaps_rollup(pid: int) -> dict[str, int]:
    """kB fields of /proc/PID/smaps_rollup (Rss, Pss, Pss_Anon, ...); empty if unavailable."""
    result: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                result[parts[0].rstrip(":")] = int(parts[1])
    return result


def server_memory(pid: int) -> dict[str, Any]:
    rollup = smaps_rollup(pid)
    return {
        "rss_mb": status_field(pid, "VmRSS") / 1024,
        "rss_anon_mb": status_field(pid, "RssAnon") / 1024,
        "hwm_mb": status_field(pid, "VmHWM") / 1024,
        "pss_mb": rollup["Pss"] / 1024 if "Pss" in rollup else None,
        "threads": status_field(pid, "Threads"),
        "cpu_s": round(cpu_seconds(pid), 2),
    }


def participants_metric(network: Network, url: str) -> int | None:
    """``sfu_participants`` from the server's /metrics (what the server thinks it holds)."""
    text = metrics.fetch(network, url.replace("ws://", "http://").removesuffix("/ws") + "/metrics")
    for line in (text or "").splitlines():
        if line.startswith("sfu_participants "):
            return int(float(line.split()[1]))
    return None


# --- tracemalloc probe ---


class ProbeReader:
    """Triggers benchmarks/memory_probe.py (SIGUSR1; SIGUSR2 also trims malloc) and reads what
    it wrote."""

    def __init__(self, server: Process) -> None:
        self.server = server
        self.path = memory_probe.default_output(server.pid)
        self.seq = 0

    def snapshot(self, trim: bool = False) -> dict[str, Any]:
        self.seq += 1
        os.kill(self.server.pid, signal.SIGUSR2 if trim else signal.SIGUSR1)
        deadline = time.monotonic() + PROBE_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                document: dict[str, Any] = json.loads(self.path.read_text())
                if document.get("seq") == self.seq:
                    return document
            if not self.server.alive():
                break
            time.sleep(0.2)
        raise RuntimeError(f"the memory probe wrote no snapshot {self.seq}\n{self.server.logs()}")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def per_participant_sites(diff: list[list[Any]], participants: int) -> list[dict[str, Any]]:
    return [
        {
            "site": site,
            "bytes": size,
            "blocks": count,
            "bytes_per_participant": round(size / participants) if participants else None,
            "blocks_per_participant": round(count / participants, 2) if participants else None,
        }
        for site, size, count in diff
    ]


# --- the run ---


def server_module(options: Options) -> str:
    return "benchmarks.memory_probe" if options.tracemalloc else options.server_module


def client_command(options: Options, url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.memory_clients",
        "--url",
        url,
        "--ice-host",
        "127.0.0.1",
        "--audio-payload",
        str(options.audio_payload),
        "--video-rate",
        str(options.video_rate),
        "--video-payload",
        str(options.video_payload),
        "--fps",
        str(options.fps),
    ]


def step_bounds(total_rooms: int, steps: int) -> list[int]:
    """Rooms connected after each step (0 first): ``steps`` nearly equal increments."""
    steps = max(1, min(steps, total_rooms))
    return [round(k * total_rooms / steps) for k in range(steps + 1)]


class Run:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.network = Network()
        self.samples: list[dict[str, Any]] = []
        self.joins: list[dict[str, Any]] = []
        self.probe: dict[str, Any] = {}
        self.clients: list[PeerProcess] = []
        self.started = time.monotonic()
        self.started_at = datetime.now(UTC)
        self.loadavg_at_start = [round(x, 2) for x in os.getloadavg()]
        self._busy0 = busy_cpu_seconds()

    def sample(
        self, server: Process, url: str, phase: str, participants: int, sending: int
    ) -> dict[str, Any]:
        time.sleep(self.options.settle)
        if not server.alive():
            raise RuntimeError(f"the server died\n{server.logs()}")
        row = {
            "phase": phase,
            "participants": participants,
            "sending": sending,
            "at_s": round(time.monotonic() - self.started, 1),
            **server_memory(server.pid),
            "server_participants": participants_metric(self.network, url),
            "clients_rss_mb": round(sum(status_field(c.pid, "VmRSS") for c in self.clients) / 1024),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        self.samples.append(row)
        seen = row["server_participants"]
        if seen is not None and seen != participants:
            print(f"  warning: the server holds {seen} participants, not {participants}")
        pss = f"{row['pss_mb']:.1f}" if row["pss_mb"] is not None else "-"
        print(
            f"  {phase:>8} {participants:4d} participants ({sending:3d} sending): "
            f"RSS {row['rss_mb']:.1f} MB, PSS {pss} MB, {row['threads']} threads, "
            f"server sees {row['server_participants']}",
            flush=True,
        )
        return row

    def execute(self) -> dict[str, Any]:
        options = self.options
        server, url = start_aiosfu(self.network, self.workdir, server_module(options))
        probe = ProbeReader(server) if options.tracemalloc else None
        try:
            self.sample(server, url, "baseline", 0, 0)
            if probe is not None:
                probe.snapshot()
            self.clients = [
                PeerProcess(f"clients-{i}", client_command(options, url), self.workdir)
                for i in range(options.client_processes)
            ]
            for client in self.clients:
                client.wait_event("ready", 60.0)
            rooms = options.rooms()
            bounds = step_bounds(len(rooms), options.steps)
            connected = 0
            for lo, hi in itertools.pairwise(bounds):
                connected += self._join(rooms[lo:hi])
                self.sample(server, url, "idle", sum(s for _, s in rooms[:hi]), 0)
            if probe is not None:
                idle = probe.snapshot()
                self.probe["idle"] = self._sites(idle, connected)
            sending = 0
            media_bounds = bounds[: options.media_steps + 1] if options.media_steps else bounds
            for lo, hi in itertools.pairwise(media_bounds):
                sending = self._media([name for name, _ in rooms[lo:hi]])
                time.sleep(options.media_seconds)
                self.sample(server, url, "media", options.participants, sending)
            if probe is not None:
                media = probe.snapshot()
                self.probe["media"] = self._sites(media, sending)
            reports = [self._report(c) for c in self.clients]
            return self._document(connected, reports)
        finally:
            for client in reversed(self.clients):
                client.stop()
            server.stop()
            if probe is not None:
                probe.remove()

    def _join(self, rooms: list[tuple[str, int]]) -> int:
        parts = [rooms[i :: len(self.clients)] for i in range(len(self.clients))]
        busy = [(c, part) for c, part in zip(self.clients, parts, strict=True) if part]
        for client, part in busy:
            client.command(cmd="join", rooms=part)
        connected = 0
        for client, part in busy:
            event = client.wait_event("joined", JOIN_TIMEOUT)
            event.pop("event", None)
            self.joins.append({"process": client.name, "rooms": len(part), **event})
            connected += int(event["connected"])
            for failure in event["failed"]:
                print(f"  failed: {failure}", flush=True)
        return connected

    def _media(self, rooms: list[str]) -> int:
        for client in self.clients:
            client.command(cmd="media", rooms=rooms)
        return sum(int(c.wait_event("media", 60.0)["sending"]) for c in self.clients)

    @staticmethod
    def _report(client: PeerProcess) -> dict[str, Any]:
        client.command(cmd="report")
        event = client.wait_event("report", 60.0)
        event.pop("event", None)
        return {"process": client.name, **event}

    @staticmethod
    def _sites(document: dict[str, Any], participants: int) -> dict[str, Any]:
        return {
            "participants": participants,  # what the growth is divided by
            "traced_mb": round(document["traced_bytes"] / 2**20, 1),
            "tracemalloc_overhead_mb": round(document["tracemalloc_overhead_bytes"] / 2**20, 1),
            "grew_mb": round(document["diff_total_bytes"] / 2**20, 2),
            "gc_freed_mb": round(document.get("gc_freed_bytes", 0) / 2**20, 2),
            "grew_bytes_per_participant": (
                round(document["diff_total_bytes"] / participants) if participants else None
            ),
            "snapshot_seconds": document["snapshot_seconds"],
            "sites": per_participant_sites(document["diff"], participants),
            "owners": per_participant_sites(document.get("diff_owners", []), participants),
            "files": per_participant_sites(document.get("diff_files", []), participants),
            "packages": per_participant_sites(document.get("diff_packages", []), participants),
        }

    def _document(self, connected: int, reports: list[dict[str, Any]]) -> dict[str, Any]:
        options = self.options
        elapsed = time.monotonic() - self.started
        own = sum(r["cpu_s"] for r in reports)  # the clients' CPU; the server's is sampled
        others = busy_cpu_seconds() - self._busy0 - own - self.samples[-1]["cpu_s"]
        return {
            "meta": {
                **machine(options, self.started_at),
                "loadavg_at_start": self.loadavg_at_start,
            },
            "participants": options.participants,
            "connected": connected,
            "room_size": options.room_size,
            "rooms": len(options.rooms()),
            "samples": self.samples,
            "joins": self.joins,
            "clients": reports,
            "summary": summarize(self.samples, options.participants),
            "others_cpu_pct": round(100 * others / elapsed, 1),
            "seconds": round(elapsed, 1),
            **({"tracemalloc": self.probe} if self.probe else {}),
        }


def fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares slope and intercept of (x, y); None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    slope, intercept = np.polyfit(xs, ys, 1)
    return float(slope), float(intercept)


def summarize(samples: list[dict[str, Any]], participants: int) -> dict[str, Any]:
    baseline = samples[0]
    idle = [baseline] + [s for s in samples if s["phase"] == "idle"]
    media = [idle[-1]] + [s for s in samples if s["phase"] == "media"]
    summary: dict[str, Any] = {
        "baseline_rss_mb": round(baseline["rss_mb"], 2),
        "baseline_threads": baseline["threads"],
        "threads": {str(s["participants"]): s["threads"] for s in idle},
        "threads_with_media": media[-1]["threads"],
        "target_mb_per_participant": TARGET_MB,
        "stock_aiortc_mb_per_idle_connection": STOCK_AIORTC_MB,
    }
    for key in ("rss_mb", "pss_mb", "rss_anon_mb"):
        if any(s[key] is None for s in samples):
            continue
        idle_fit = fit([(s["participants"], s[key]) for s in idle])
        media_fit = fit([(s["sending"], s[key]) for s in media])
        name = key.removesuffix("_mb")
        summary[f"{name}_idle_mb_per_participant"] = round(idle_fit[0], 4) if idle_fit else None
        # media's own slope (participants sending, all connected) on top of being connected
        summary[f"{name}_media_extra_mb_per_participant"] = (
            round(media_fit[0], 4) if media_fit else None
        )
        summary[f"{name}_with_media_mb_per_participant"] = (
            round(idle_fit[0] + media_fit[0], 4) if idle_fit and media_fit else None
        )
        summary[f"{name}_total_growth_mb"] = round(media[-1][key] - baseline[key], 2)
        summary[f"{name}_growth_mb_per_participant"] = (
            round((media[-1][key] - baseline[key]) / participants, 4) if participants else None
        )
    return summary


def machine(options: Options, started: datetime) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True).stdout

    # the server runs from the work tree: say if it differs from the commit
    dirty = git("status", "--porcelain", "--", "sfu", "signaling").split("\n")
    return {
        "started": started.isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted": [line[3:] for line in dirty if line.strip()],
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "server_module": server_module(options),
        "tracemalloc": options.tracemalloc,
        "steps": options.steps,
        "media_steps": options.media_steps or options.steps,
        "client_processes": options.client_processes,
        "settle_s": options.settle,
        "media_seconds": options.media_seconds,
        "audio": {"packets_per_s": 50, "payload": options.audio_payload},
        "video": {
            "packets_per_s": options.video_rate,
            "payload": options.video_payload,
            "fps": options.fps,
            "kbps": round(options.video_rate * (options.video_payload + 12) * 8 / 1000, 1),
        },
        "server_history_size": _history_size(),
    }


def _history_size() -> int | None:
    """Video packets the server keeps per published track for NACKs (read, not changed)."""
    try:
        from sfu.media import layer
    except ImportError:
        return None
    return int(layer.HISTORY_SIZE)


# --- output ---


def _mb(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def tables(document: dict[str, Any]) -> str:
    s = document["summary"]
    lines = [
        f"Server memory per participant ({document['connected']}/{document['participants']} "
        f"connected, rooms of {document['room_size']}; target ≤ {TARGET_MB} MB, "
        f"stock aiortc {STOCK_AIORTC_MB} MB per idle connection)",
        "",
        "| measure | idle (connected, no media) | with media | growth baseline → end ÷ N |",
        "|---|---|---|---|",
    ]
    for key, label in (("rss", "RSS"), ("pss", "PSS"), ("rss_anon", "RssAnon")):
        if f"{key}_idle_mb_per_participant" in s:
            lines.append(
                f"| {label} MB/participant | {_mb(s[f'{key}_idle_mb_per_participant'])} | "
                f"{_mb(s[f'{key}_with_media_mb_per_participant'])} "
                f"(+{_mb(s[f'{key}_media_extra_mb_per_participant'])} for media) | "
                f"{_mb(s[f'{key}_growth_mb_per_participant'])} |"
            )
    lines += [
        "",
        "| phase | participants | sending | RSS MB | PSS MB | RssAnon MB | threads | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in document["samples"]:
        lines.append(
            f"| {row['phase']} | {row['participants']} | {row['sending']} | "
            f"{row['rss_mb']:.1f} | {_mb(row['pss_mb'], 1)} | {row['rss_anon_mb']:.1f} | "
            f"{row['threads']} | {row['cpu_s']:.1f} |"
        )
    probe = document.get("tracemalloc")
    if probe:
        for phase, title in (
            ("idle", "allocated while participants joined (idle)"),
            ("media", "allocated while media flowed (per participant sending)"),
        ):
            data = probe[phase]
            lines += [
                "",
                f"tracemalloc: {title}: {data['grew_mb']} MB in total, "
                f"{data['grew_bytes_per_participant']} B per participant "
                f"(÷ {data['participants']}; live blocks, after a full collection that freed "
                f"{data['gc_freed_mb']} MB)",
            ]
            for key, heading, n in (
                ("packages", "package of the owner (innermost line outside the stdlib)", 10),
                ("files", "file of the owner", 15),
                ("owners", "owner (innermost line outside the stdlib)", 20),
                ("sites", "allocating line", 30),
            ):
                lines += [
                    "",
                    f"| {heading} | B/participant | blocks/participant |",
                    "|---|---|---|",
                ]
                lines += [
                    f"| {e['site']} | {e['bytes_per_participant']:,} "
                    f"| {e['blocks_per_participant']} |"
                    for e in data[key][:n]
                ]
    return "\n".join(lines)


def save(document: dict[str, Any], out: Path, name: str = "memory") -> Path:
    """Write ``document`` to OUT/NAME-<start time>.json."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = document["meta"]["started"].replace(":", "").replace("-", "")[:15]
    path = out / f"{name}-{stamp}.json"
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


# --- command line ---


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--participants", type=int, default=120)
    parser.add_argument("--room-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="steps of rooms connected (and sent)")
    parser.add_argument(
        "--media-steps",
        type=int,
        default=0,
        help="turn media on in only the first N steps (0: all); with --tracemalloc the server "
        "cannot forward everyone's media and drops participants",
    )
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before each sample")
    parser.add_argument(
        "--media-seconds", type=float, default=20.0, help="media per step before its sample"
    )
    parser.add_argument("--audio-payload", type=int, default=80, help="bytes (~32 kbit/s Opus)")
    parser.add_argument("--video-kbps", type=float, default=250.0)
    parser.add_argument("--video-payload", type=int, default=1000, help="bytes per video packet")
    parser.add_argument("--fps", type=int, default=15, help="video frames/s")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="run the server under benchmarks.memory_probe; list what grew per participant",
    )
    parser.add_argument("--server-module", default="signaling.cli", help="python -m M serve")
    parser.add_argument("--quick", action="store_true", help="--settle 0.5 --media-seconds 2")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--logs", type=Path, help="keep the processes' output here")
    args = parser.parse_args(argv)
    if args.participants < 1 or args.room_size < 2:
        parser.error("need at least 1 participant and rooms of at least 2")
    return Options(
        participants=args.participants,
        room_size=args.room_size,
        steps=args.steps,
        media_steps=max(0, args.media_steps),
        client_processes=max(1, args.client_processes),
        settle=0.5 if args.quick else args.settle,
        media_seconds=2.0 if args.quick else args.media_seconds,
        audio_payload=args.audio_payload,
        video_kbps=args.video_kbps,
        video_payload=args.video_payload,
        fps=args.fps,
        tracemalloc=args.tracemalloc,
        server_module=args.server_module,
        out=args.out,
        logs=args.logs,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    options = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop_on_sigterm)
    history = _history_size()
    if history and options.video_rate * options.media_seconds < history:
        print(
            f"note: {options.media_seconds:g} s of video at {options.video_rate} packets/s "
            f"does not fill the server's {history}-packet histories",
            flush=True,
        )
    print(f"load average {os.getloadavg()[0]:.2f}; {options.participants} participants", flush=True)
    with tempfile.TemporaryDirectory(prefix="aiosfu-memory-") as tmp:
        workdir = options.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        document = Run(options, workdir).execute()
    path = save(document, options.out)
    print(tables(document))
    print(f"saved: {path}")
    return document


if __name__ == "__main__":
    main()
