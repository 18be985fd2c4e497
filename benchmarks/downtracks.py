"""Server memory per down-track: one room of audio+video publishers subscribing to each other.

    .venv/bin/python -m benchmarks.downtracks                   # 28 publishers, 1,512 down-tracks
    .venv/bin/python -m benchmarks.downtracks --tracemalloc 12  # + where the bytes go
    .venv/bin/python -m benchmarks.downtracks --publishers 4 --steps 2 --quick

The server runs as ``python -m benchmarks.memory_probe serve`` (tracemalloc off unless
``--tracemalloc``). ``--publishers`` participants (benchmarks/memory_clients.py: real aiortc
peers, silent microphone and camera, no media sent) join one room with ``autoSubscribe`` off:
connected and publishing, receiving nothing. Then, in ``--steps`` steps, everyone subscribes to
the tracks of the first K publishers (K growing to all), and waits until it carries them. After
each step the server's RSS (/proc) and a census of its heap (benchmarks/heap.py) are taken; the
down-tracks are counted by the census (live ``DownTrack`` objects). The number of participants
never changes between the first and the last sample, so the slope of memory over down-tracks is
what one down-track costs: its m-line on the subscriber's connection (aiortc transceiver, codec
and SDP state, the descriptions the connection keeps) and the SFU's own (down-track, outgoing
stream, munger). With ``--tracemalloc`` the probe's snapshots before the first and after the last
step are compared (``--steps`` is then 1) and the growth is listed per down-track, by package, file
and line of the owner (as in benchmarks/memory.py). See benchmarks/README.md.
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

from benchmarks import metrics
from benchmarks.churn import start_probe_server, summarize_census
from benchmarks.memory import (
    ProbeReader,
    client_command,
    fit,
    machine,
    participants_metric,
    per_participant_sites,
    save,
    server_memory,
)
from benchmarks.memory import parse_args as memory_args
from benchmarks.processes import REPO, Network, PeerProcess, Process, stop_on_sigterm

RESULTS = REPO / "benchmarks" / "results"
JOIN_TIMEOUT = 600.0
ROOM = "downtracks"
DOWN_TRACK = "sfu.media.downtrack.DownTrack"


@dataclass(frozen=True, slots=True)
class Options:
    publishers: int
    steps: int
    settle: float
    tracemalloc: int
    out: Path
    logs: Path | None


class Run:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.network = Network()
        self.samples: list[dict[str, Any]] = []
        self.censuses: list[dict[str, Any]] = []  # the probe's documents, as written
        self.steps: list[dict[str, Any]] = []
        self.started = time.monotonic()

    def sample(self, server: Process, probe: ProbeReader, url: str, phase: str) -> dict[str, Any]:
        time.sleep(self.options.settle)
        memory = server_memory(server.pid)
        document = probe.snapshot()
        self.censuses.append(document)
        baseline = self.samples[0]["watched"] if self.samples else None
        row = {
            "phase": phase,
            "at_s": round(time.monotonic() - self.started, 1),
            "server_participants": participants_metric(self.network, url),
            "down_tracks": document["census"]["watched"][DOWN_TRACK],
            **memory,
            **summarize_census(document, baseline),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        row["heap_mb"] = round((row["pymalloc_live_mb"] or 0) + (row["malloc_in_use_mb"] or 0), 2)
        self.samples.append(row)
        print(
            f"  {phase:<16} {row['server_participants']} participants, "
            f"{row['down_tracks']:5d} down-tracks: RSS {row['rss_mb']:6.1f} MB, "
            f"live heap {row['heap_mb']:6.2f} MB (pymalloc {row['pymalloc_live_mb']}, "
            f"malloc {row['malloc_in_use_mb']})",
            flush=True,
        )
        return row

    def execute(self) -> dict[str, Any]:
        options = self.options
        server, url = start_probe_server(self.network, self.workdir, options.tracemalloc)
        probe = ProbeReader(server)
        clients: PeerProcess | None = None
        try:
            self.sample(server, probe, url, "baseline")
            clients = PeerProcess("clients", client_command(memory_args([]), url), self.workdir)
            clients.wait_event("ready", 60.0)
            # one at a time: sfu_client applies a joined reply's participants after the reader
            # may have handled the next track-published, and a concurrent publisher's track is
            # then lost to that client (with autoSubscribe off it could never subscribe to it)
            clients.command(
                cmd="join", rooms=[[ROOM, options.publishers]], autoSubscribe=False, concurrency=1
            )
            joined = clients.wait_event("joined", JOIN_TIMEOUT)
            for failure in joined["failed"]:
                print(f"  failed: {failure}", flush=True)
            self.steps.append({"step": "join", **_event(joined)})
            self.sample(server, probe, url, "joined")
            for k in step_publishers(options.publishers, options.steps):
                clients.command(cmd="subscribe", room=ROOM, publishers=k)
                done = clients.wait_event("subscribed", JOIN_TIMEOUT)
                for failure in done["failed"]:
                    print(f"  failed: {failure}", flush=True)
                self.steps.append({"step": f"subscribe {k}", **_event(done)})
                self._wait_down_tracks(url, int(done["tracks"]))
                self.sample(server, probe, url, f"subscribed {k}")
            return self._document(joined)
        finally:
            if clients is not None:
                clients.stop()
            server.stop()
            probe.remove()

    def _wait_down_tracks(self, url: str, expected: int) -> None:
        """Until the server forwards on every m-line the clients carry (it creates a down-track
        once the answer is applied, after the client saw the offer)."""
        deadline = time.monotonic() + JOIN_TIMEOUT
        count = None
        while time.monotonic() < deadline:
            count = down_tracks_metric(self.network, url)
            if count == expected:
                return
            time.sleep(0.2)
        print(f"  warning: the server has {count} down-tracks, not {expected}", flush=True)

    def _document(self, joined: dict[str, Any]) -> dict[str, Any]:
        first, last = self.samples[1], self.samples[-1]
        down_tracks = last["down_tracks"] - first["down_tracks"]
        document: dict[str, Any] = {
            "publishers": self.options.publishers,
            "connected": joined["connected"],
            "steps": self.steps,
            "samples": self.samples,
            "summary": summarize(self.samples),
            "objects_per_down_track": objects_per_down_track(
                first["watched"], last["watched"], down_tracks
            ),
        }
        if self.options.tracemalloc:
            grew = self.censuses[-1]
            document["tracemalloc"] = {
                "down_tracks": down_tracks,
                "grew_mb": round(grew["diff_total_bytes"] / 2**20, 2),
                "grew_bytes_per_down_track": round(grew["diff_total_bytes"] / down_tracks)
                if down_tracks
                else None,
                **{
                    key: per_participant_sites(grew.get(f"diff_{key}", []), down_tracks)
                    for key in ("packages", "files", "owners")
                },
                "sites": per_participant_sites(grew["diff"], down_tracks),
            }
        return document


def down_tracks_metric(network: Network, url: str) -> int | None:
    """``sfu_down_tracks`` from the server's /metrics, both kinds."""
    text = metrics.fetch(network, url.replace("ws://", "http://").removesuffix("/ws") + "/metrics")
    values = [
        float(line.split()[-1])
        for line in (text or "").splitlines()
        if line.startswith("sfu_down_tracks{")
    ]
    return int(sum(values)) if values else None


def _event(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "event"}


def step_publishers(publishers: int, steps: int) -> list[int]:
    """K after each step: ``steps`` nearly equal increments up to every publisher."""
    steps = max(1, min(steps, publishers))
    return [round(k * publishers / steps) for k in range(1, steps + 1)]


def objects_per_down_track(
    before: dict[str, int], after: dict[str, int], down_tracks: int
) -> dict[str, float]:
    if not down_tracks:
        return {}
    return {
        name.rsplit(".", 1)[1]: round((after.get(name, 0) - before.get(name, 0)) / down_tracks, 2)
        for name in after
        if after.get(name, 0) != before.get(name, 0)
    }


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """KB per down-track: the slope over the subscription steps (participants fixed), and the
    growth from startup divided by the down-tracks (what the issue computed: it includes the
    participants' own cost)."""
    baseline, joined, last = samples[0], samples[1], samples[-1]
    steps = samples[1:]
    summary: dict[str, Any] = {
        "participants": last["server_participants"],
        "down_tracks": last["down_tracks"],
        "baseline_rss_mb": round(baseline["rss_mb"], 1),
        "joined_rss_mb": round(joined["rss_mb"], 1),
        "final_rss_mb": round(last["rss_mb"], 1),
    }
    for key in ("rss_mb", "rss_anon_mb", "heap_mb", "pymalloc_live_mb", "malloc_in_use_mb"):
        name = key.removesuffix("_mb")
        slope = fit([(s["down_tracks"], s[key]) for s in steps if s[key] is not None])
        summary[f"{name}_kb_per_down_track"] = round(slope[0] * 1024, 1) if slope else None
        if last["down_tracks"] and last[key] is not None and baseline[key] is not None:
            growth = (last[key] - baseline[key]) * 1024 / last["down_tracks"]
            summary[f"{name}_growth_kb_per_down_track"] = round(growth, 1)
    return summary


def tables(document: dict[str, Any]) -> str:
    s = document["summary"]
    lines = [
        f"{document['connected']}/{document['publishers']} publishers (audio + video, silent), "
        f"{s['down_tracks']} down-tracks at the end",
        "",
        "| KB per down-track | RSS | RssAnon | live heap (pymalloc + malloc) |",
        "|---|---|---|---|",
        f"| slope over the subscription steps | {s['rss_kb_per_down_track']} | "
        f"{s['rss_anon_kb_per_down_track']} | {s['heap_kb_per_down_track']} |",
        f"| (end - startup) ÷ down-tracks | {s.get('rss_growth_kb_per_down_track')} | "
        f"{s.get('rss_anon_growth_kb_per_down_track')} | "
        f"{s.get('heap_growth_kb_per_down_track')} |",
        "",
        "| phase | participants | down-tracks | RSS MB | RssAnon MB | pymalloc live MB "
        "| malloc in use MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in document["samples"]:
        lines.append(
            f"| {row['phase']} | {row['server_participants']} | {row['down_tracks']} | "
            f"{row['rss_mb']:.1f} | {row['rss_anon_mb']:.1f} | {row['pymalloc_live_mb']} | "
            f"{row['malloc_in_use_mb']} |"
        )
    objects = document["objects_per_down_track"]
    lines += ["", "objects per down-track: " + ", ".join(f"{k} {v}" for k, v in objects.items())]
    probe = document.get("tracemalloc")
    if probe:
        lines += [
            "",
            f"tracemalloc: {probe['grew_mb']} MB grew while {probe['down_tracks']} down-tracks "
            f"were added: {probe['grew_bytes_per_down_track']} B per down-track",
        ]
        for key, heading, n in (
            ("packages", "package of the owner", 10),
            ("files", "file of the owner", 15),
            ("owners", "owner (innermost line outside the stdlib)", 25),
            ("sites", "allocating line", 20),
        ):
            lines += ["", f"| {heading} | B/down-track | blocks/down-track |", "|---|---|---|"]
            for e in probe[key][:n]:
                size, blocks = e["bytes_per_participant"] or 0, e["blocks_per_participant"]
                lines.append(f"| {e['site']} | {size:,} | {blocks} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--publishers", type=int, default=28)
    parser.add_argument("--steps", type=int, default=4, help="subscription steps")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before each sample")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        help="frames per allocation (0: off); lists where the growth went, in one step",
    )
    parser.add_argument("--quick", action="store_true", help="--settle 0.5")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--logs", type=Path, help="keep the processes' output here")
    args = parser.parse_args(argv)
    if args.publishers < 2:
        parser.error("need at least 2 publishers")
    tracing = max(0, args.tracemalloc)
    return Options(
        publishers=args.publishers,
        steps=1 if tracing else max(1, args.steps),
        settle=0.5 if args.quick else args.settle,
        tracemalloc=tracing,
        out=args.out,
        logs=args.logs,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    options = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop_on_sigterm)
    started = datetime.now(UTC)
    print(f"load average {os.getloadavg()[0]:.2f}; {options.publishers} publishers", flush=True)
    with tempfile.TemporaryDirectory(prefix="aiosfu-downtracks-") as tmp:
        workdir = options.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        document = Run(options, workdir).execute()
    meta = machine(memory_args([]), started)
    for key in ("tracemalloc", "steps", "media_steps", "media_seconds", "client_processes"):
        meta.pop(key, None)
    document = {
        "meta": {
            **meta,
            "server_module": "benchmarks.memory_probe",
            "settle_s": options.settle,
            "tracemalloc_frames": options.tracemalloc,
            "steps": options.steps,
        },
        **document,
    }
    path = save(document, options.out, "downtracks")
    print(tables(document))
    print(f"saved: {path}")
    return document


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
