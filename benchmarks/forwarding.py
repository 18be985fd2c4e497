"""Forwarding cost and latency: aiosfu against Janus VideoRoom, same load, same run.

    .venv/bin/python -m benchmarks.forwarding                 # the full comparison (root: netns)
    .venv/bin/python -m benchmarks.forwarding --quick --forwarders aiosfu --no-netns
    .venv/bin/python -m benchmarks.forwarding --case 16@4000 --profile 16@4000

For each case (``K@RATE``: one publisher sending RATE VP8-shaped packets/s to K subscribers;
``RxK@RATE``: R such rooms at once) and each forwarder, ``--runs`` windows of ``--seconds`` are
measured, the forwarders interleaved. Per window: the forwarder process's CPU time per forwarded
packet (/proc/PID/stat), forwarded packets/s, packets lost, end-to-end latency (publisher send to
subscriber receive, one host clock), and the load generator's own CPU. Medians are printed as a
table with the ratios to Janus and saved as JSON and PNG. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import metrics, report
from benchmarks.cases import (
    AIOSFU_NO_TCC,
    AIOSFU_SOCKETS,
    AIOSFU_WORKERS,
    DEFAULT_FORWARDERS,
    FORWARDERS,
    JANUS_FORWARDERS,
    PERCENTILES,
    SFU_SERVE,
    SIMULCAST_RIDS,
    Case,
    Trial,
    layer_stats,
)
from benchmarks.cases import percentile_key as pkey
from benchmarks.processes import (
    REPO,
    Network,
    PeerProcess,
    Process,
    busy_cpu_seconds,
    cpu_seconds,
    janus_version,
    namespace,
    peer_command,
    process_tree,
    start_aiosfu,
    start_janus,
    stop_on_sigterm,
    summed_cpu_times,
    tree_context_switches,
    tree_cpu_by_pid,
    tree_status_field,
    udp_counters,
    udp_drops,
)
from benchmarks.profile import record_profile
from benchmarks.profile import summarize as summarize_profile

DEFAULT_CASES = ("4@2000", "16@2000", "16@4000")
QUICK_CASES = ("2@2000",)
DEFAULT_JANUS_CONFIGS = REPO.parent / "shared" / "testbed" / "janus"
RESULTS = REPO / "benchmarks" / "results"
READY_TIMEOUT = 90.0
IN_FLIGHT_WAIT = 0.5  # after the window, for the last packets to arrive
QUIET_TIMEOUT = 20.0
ATTEMPTS = 2


@dataclass(frozen=True, slots=True)
class Options:
    cases: tuple[Case, ...]
    forwarders: tuple[str, ...]
    runs: int
    seconds: float
    warmup: float
    payload: int
    fps: int
    netns: bool
    janus_configs: Path
    out: Path
    profile: Case | None
    subscriber_processes: int
    quiet: float
    nice: int
    server_module: str
    logs: Path | None
    transport_cc: str = "on"  # subscribers negotiate transport-cc and send feedback ("off": not)
    congestion_control: str = "on"  # aiosfu acts on the estimates ("off": estimates only)
    #: trials run side by side wait here so that they measure one window (benchmarks.tcc_pairs)
    window_barrier: threading.Barrier | None = None
    #: called with the started forwarder and its URL before any load (benchmarks.saturation
    #: puts its processes under a CPU cap here)
    on_server_start: Callable[[Process, str], None] | None = None


def start_forwarder(
    name: str, network: Network, workdir: Path, options: Options
) -> tuple[Process, str]:
    if name in SFU_SERVE:
        extra = [] if options.congestion_control == "on" else ["--no-congestion-control"]
        if name in AIOSFU_WORKERS:
            extra += ["--workers", str(AIOSFU_WORKERS[name])]
        if name == AIOSFU_SOCKETS:
            extra.append("--socket-per-participant")
        return start_aiosfu(network, workdir, options.server_module, extra)
    return start_janus(network, workdir, options.janus_configs, JANUS_FORWARDERS[name])


def run_trial(
    forwarder: str,
    case: Case,
    run: int,
    options: Options,
    network: Network,
    workdir: Path,
    profile_to: Path | None = None,
) -> Trial:
    """Start the forwarder and the load, measure one window, stop everything."""
    server, url = start_forwarder(forwarder, network, workdir, options)
    kind = "aiosfu" if forwarder in SFU_SERVE else "janus"
    transport_cc = "shadow" if forwarder == AIOSFU_NO_TCC else options.transport_cc
    peers: list[PeerProcess] = []
    try:
        if options.on_server_start is not None:
            options.on_server_start(server, url)
        shape: dict[str, Any] = {"rate": case.rate, "fps": options.fps, "payload": options.payload}
        if case.simulcast:
            shape["simulcast"] = ",".join(SIMULCAST_RIDS[kind])
        publisher = PeerProcess(
            "publisher",
            peer_command(network, "publisher", kind, url, rooms=case.rooms, **shape),
            workdir,
        )
        peers.append(publisher)
        feeds: dict[str, str] = publisher.wait_event("ready", READY_TIMEOUT)["feeds"]
        subscribers = []
        for index, part in enumerate(_split(feeds, options.subscriber_processes)):
            latency_file = workdir / f"latency-{index}.npy"
            argv = peer_command(
                network,
                "subscriber",
                kind,
                url,
                feeds=json.dumps(part),
                subscribers=case.subscribers,
                latency_file=latency_file,
                transport_cc=transport_cc,
                **shape,
            )
            subscribers.append(PeerProcess(f"subscribers-{index}", argv, workdir))
        peers += subscribers
        first_packet_ms = max(
            s.wait_event("ready", READY_TIMEOUT)["first_packet_ms"] for s in subscribers
        )
        time.sleep(options.warmup)
        return _measure(
            forwarder,
            case,
            run,
            options,
            network,
            url,
            server,
            publisher,
            subscribers,
            first_packet_ms,
            profile_to,
        )
    finally:
        for peer in reversed(peers):
            peer.stop()
        server.stop()


def _split(feeds: dict[str, str], parts: int) -> list[dict[str, str]]:
    """Rooms spread over subscriber processes (one process when there is one room)."""
    items = list(feeds.items())
    parts = max(1, min(parts, len(items)))
    return [dict(items[i::parts]) for i in range(parts)]


def _measure(
    forwarder: str,
    case: Case,
    run: int,
    options: Options,
    network: Network,
    url: str,
    server: Process,
    publisher: PeerProcess,
    subscribers: list[PeerProcess],
    first_packet_ms: float,
    profile_to: Path | None,
) -> Trial:
    http_url = url.replace("ws://", "http://").removesuffix("/ws")
    scrape = forwarder in SFU_SERVE and profile_to is None
    histogram_before = _histogram(network, http_url + "/metrics") if scrape else None
    load = [publisher.pid, *(s.pid for s in subscribers)]

    def roles() -> dict[str, list[int]]:
        # the server's media sockets are its workers' with sfu serve --workers N
        named = {"server": process_tree(server.pid), "publisher": [publisher.pid]}
        return named | {s.name: [s.pid] for s in subscribers}

    if options.window_barrier is not None:
        options.window_barrier.wait()
    drops0, snmp0, busy0 = udp_drops(roles()), udp_counters(server.pid), busy_cpu_seconds()
    # every reading of the server covers its process tree: the server and its workers, if any
    server_cpu0, ctx0 = tree_cpu_by_pid(server.pid), tree_context_switches(server.pid)
    load_cpu0 = [cpu_seconds(pid) for pid in load]
    t0 = time.monotonic_ns()
    if profile_to is not None:
        record_profile(server.pid, options.seconds, profile_to)
    else:
        time.sleep(options.seconds)
    t1 = time.monotonic_ns()
    server_cpu1 = tree_cpu_by_pid(server.pid)
    (user0, system0), (user1, system1) = map(summed_cpu_times, (server_cpu0, server_cpu1))
    server_user, server_system = user1 - user0, system1 - system0
    server_cpu = server_user + server_system
    ctx = tree_context_switches(server.pid) - ctx0
    load_cpu = [cpu_seconds(pid) - c for pid, c in zip(load, load_cpu0, strict=True)]
    drops1, snmp1 = udp_drops(roles()), udp_counters(server.pid)
    busy = busy_cpu_seconds() - busy0
    threads = tree_status_field(server.pid, "Threads")
    rss_kb = tree_status_field(server.pid, "VmRSS")
    histogram_after = _histogram(network, http_url + "/metrics") if histogram_before else None
    workers = None
    if forwarder in AIOSFU_WORKERS:
        workers = _workers(network, http_url + "/healthz", server_cpu0, server_cpu1)
    if not server.alive():
        raise RuntimeError(f"{forwarder} died during the window\n{server.logs()}")
    time.sleep(IN_FLIGHT_WAIT)
    publisher.command(cmd="report", t0=t0, t1=t1)
    sent_report = publisher.wait_event("report", 60.0)
    received: dict[str, int] = {}
    latencies = []
    per_subscriber = []
    layers: list[dict[str, Any]] = []
    rejected = 0
    for process in subscribers:
        process.command(cmd="report", t0=t0, t1=t1)
        got = process.wait_event("report", 60.0)
        for room, count in got["received"].items():
            received[room] = received.get(room, 0) + count
        per_subscriber += [got["per_subscriber_min"], got["per_subscriber_max"]]
        rejected += got["srtp_rejected"]
        layers += got.get("layers", [])
        latencies.append(np.load(got["latency_file"]))
    seconds = (t1 - t0) / 1e9
    sent = sum(sent_report["sent"].values())
    expected = sent * case.subscribers
    layer_rows = None
    if case.simulcast:
        layer_rows = layer_stats(sent_report["sent_by_layer"], layers, seconds, options.payload)
        expected = sum(row["expected"] for row in layer_rows)
    latency = np.concatenate(latencies) / 1e3  # ms
    trial = Trial(
        forwarder=forwarder,
        case=case.key,
        run=run,
        seconds=seconds,
        sent=sent,
        expected=expected,
        received=sum(received.values()),
        server_cpu_s=server_cpu,
        server_system_s=server_system,
        server_ctx_switches=ctx,
        server_threads=threads,
        server_rss_mb=rss_kb / 1024,
        publisher_cpu_pct=100 * load_cpu[0] / seconds,
        subscribers_cpu_pct=100 * sum(load_cpu[1:]) / seconds,
        send_lag_us=sent_report["send_lag_us"],
        first_packet_ms=first_packet_ms,
        latency_ms={
            pkey(p): float(np.percentile(latency, p)) if latency.size else float("nan")
            for p in PERCENTILES
        },
        per_subscriber=(min(per_subscriber), max(per_subscriber)),
        srtp_rejected=rejected,
        other_cpu_pct=100 * (busy - server_cpu - sum(load_cpu)) / seconds,
        udp_errors={
            k: snmp1[k] - snmp0[k]
            for k in ("InErrors", "RcvbufErrors", "SndbufErrors")
            if k in snmp1
        },
        udp_drops={
            "server": drops1["server"] - drops0["server"],
            "publisher": drops1["publisher"] - drops0["publisher"],
            "subscribers": sum(drops1[s.name] - drops0[s.name] for s in subscribers),
        },
        layers=layer_rows,
        workers=workers,
    )
    if workers is not None:
        rooms = ", ".join(f"worker {w['index']}: {w['rooms']}" for w in workers)
        trial.notes.append(f"rooms per worker: {rooms}")
    if histogram_before and histogram_after:
        trial.sfu_latency_ms = _sfu_latency(histogram_before, histogram_after)
    return trial


def _histogram(network: Network, url: str) -> tuple[str, metrics.Buckets] | None:
    text = metrics.fetch(network, url)
    return metrics.forwarding_histogram(text) if text else None


def _workers(
    network: Network,
    url: str,
    cpu0: dict[int, tuple[float, float]],
    cpu1: dict[int, tuple[float, float]],
) -> list[dict[str, Any]] | None:
    """Each worker of ``sfu serve --workers N`` as its /healthz lists it at the window's end:
    index, pid, rooms, and the CPU seconds its process used in the window (None if it was
    not running throughout)."""
    text = metrics.fetch(network, url)
    if text is None:
        return None
    workers = []
    for worker in json.loads(text).get("workers", []):
        pid = worker.get("pid")
        cpu = None
        if pid in cpu0 and pid in cpu1:
            cpu = sum(cpu1[pid]) - sum(cpu0[pid])
        workers.append(
            {"index": worker["index"], "pid": pid, "rooms": worker.get("rooms"), "cpu_s": cpu}
        )
    return workers


def _sfu_latency(
    before: tuple[str, metrics.Buckets], after: tuple[str, metrics.Buckets]
) -> dict[str, float] | None:
    result: dict[str, float] = {}
    for p in PERCENTILES:
        value = metrics.quantile(p / 100, before[1], after[1])
        if value is None:
            return None
        result[pkey(p)] = value * 1e3
    return result


def wait_until_quiet(limit_pct: float, timeout: float = QUIET_TIMEOUT) -> None:
    """Wait until the machine's other work (between trials nothing of ours runs) is below
    ``limit_pct`` of one core over a second: other processes skew both CPU and latency."""
    if math.isinf(limit_pct):
        return
    deadline = time.monotonic() + timeout
    while True:
        before = busy_cpu_seconds()
        time.sleep(1.0)
        busy = 100 * (busy_cpu_seconds() - before)
        if busy <= limit_pct:
            return
        if time.monotonic() > deadline:
            print(f"  the machine is busy ({busy:.0f} % of a core besides us): measuring anyway")
            return


def run_quietly(
    forwarder: str, case: Case, run: int, options: Options, network: Network, workdir: Path
) -> Trial:
    """A trial, repeated (up to ``ATTEMPTS`` times) while other processes took more than
    ``--quiet`` of a core during its window; the quietest attempt is kept."""
    attempts: list[Trial] = []
    for attempt in range(ATTEMPTS):
        wait_until_quiet(options.quiet)
        attempt_dir = workdir / f"attempt-{attempt}"
        attempt_dir.mkdir(exist_ok=True)
        trial = run_trial(forwarder, case, run, options, network, attempt_dir)
        report.progress(trial)
        attempts.append(trial)
        if trial.other_cpu_pct <= options.quiet:
            break
    best = min(attempts, key=lambda t: t.other_cpu_pct)
    if len(attempts) > 1:
        others = ", ".join(f"{t.other_cpu_pct:.0f} %" for t in attempts)
        best.notes.append(f"{len(attempts)} attempts (others' CPU {others}); kept the quietest")
    return best


def run(options: Options) -> dict[str, Any]:
    """Every case x run x forwarder (interleaved, the order rotated per run); returns the
    results document."""
    with tempfile.TemporaryDirectory(prefix="aiosfu-bench-") as tmp:
        workdir = options.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if options.netns:
            with namespace(f"aiosfu-bench-{os.getpid()}") as network:
                return _run_all(options, network, workdir)
        return _run_all(options, Network(), workdir)


def _run_all(options: Options, network: Network, workdir: Path) -> dict[str, Any]:
    network = dataclasses.replace(network, nice=options.nice)
    trials: list[Trial] = []
    started = datetime.now(UTC)
    forwarders = options.forwarders
    for case in options.cases:
        for run_index in range(options.runs):
            # each run starts with another forwarder: none always follows the same one
            shift = run_index % len(forwarders)
            for forwarder in forwarders[shift:] + forwarders[:shift]:
                trial_dir = workdir / f"{case.key}-{run_index}-{forwarder}"
                trial_dir.mkdir(exist_ok=True)
                trial = run_quietly(forwarder, case, run_index, options, network, trial_dir)
                trials.append(trial)
    document: dict[str, Any] = {
        "meta": machine(options, network, started),
        "trials": [t.as_dict() for t in trials],
        "summary": report.summarize(trials, options.cases, options.forwarders),
    }
    if options.profile is not None:
        profile_dir = workdir / "profile"
        profile_dir.mkdir(exist_ok=True)
        stem = f"profile-{started:%Y%m%d-%H%M%S}-{options.profile.key}"
        raw = options.out / f"{stem}.txt"
        options.out.mkdir(parents=True, exist_ok=True)
        trial = run_trial("aiosfu", options.profile, 0, options, network, profile_dir, raw)
        summary = summarize_profile(raw.read_text(), top=25)
        document["profile"] = {
            "case": options.profile.key,
            "raw": raw.name,
            "samples": summary.samples,
            "by_self": [[e.function, e.share] for e in summary.by_self],
            "by_total": [[e.function, e.share] for e in summary.by_total],
            "trial": trial.as_dict(),
        }
    return document


def machine(options: Options, network: Network, started: datetime) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    # the server runs from the work tree: say if it differs from the commit
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "sfu", "signaling"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    load = os.getloadavg()
    return {
        "started": started.isoformat(timespec="seconds"),
        "commit": commit,
        "uncommitted": [line[3:] for line in dirty if line.strip()],
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "janus": janus_version() if set(options.forwarders) & set(JANUS_FORWARDERS) else None,
        "loadavg_at_start": [round(x, 2) for x in load],
        "network": network.namespace or "host",
        "ice_host": network.ice_host,
        "runs": options.runs,
        "seconds": options.seconds,
        "warmup": options.warmup,
        "payload": options.payload,
        "fps": options.fps,
        "subscriber_processes": options.subscriber_processes,
        "nice": options.nice,
        "transport_cc": options.transport_cc,
        "congestion_control": options.congestion_control,
        "cases": [c.key for c in options.cases],
        "forwarders": list(options.forwarders),
    }


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--case",
        action="append",
        help="K@RATE or RxK@RATE; sim:RxK@RATE or `simulcast` (sim:2x12@2000) for three "
        f"simulcast layers; repeatable (default {' '.join(DEFAULT_CASES)})",
    )
    parser.add_argument(
        "--forwarders",
        default=",".join(DEFAULT_FORWARDERS),
        help=f"comma-separated, from {', '.join(FORWARDERS)} "
        f"(default {','.join(DEFAULT_FORWARDERS)})",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per run")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="after every subscriber got media"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: 1 run of 3 s, 0.5 s warmup, case {QUICK_CASES[0]} unless --case",
    )
    parser.add_argument("--payload", type=int, default=1100, help="RTP payload bytes")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument(
        "--netns",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run every process in a network namespace of our own (default: when Janus runs; "
        "needs root)",
    )
    parser.add_argument("--janus-configs", type=Path, default=DEFAULT_JANUS_CONFIGS)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where JSON and PNG go")
    parser.add_argument(
        "--profile",
        metavar="CASE",
        help="after the runs, one more aiosfu run of CASE under py-spy (top functions)",
    )
    parser.add_argument(
        "--subscriber-processes",
        type=int,
        default=1,
        help="processes the subscribers are spread over (by room)",
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=None,
        metavar="PCT",
        help="before each run, wait (up to 20 s) until other processes use less than PCT %% "
        "of a core; a run during which they used more is repeated once. "
        "Default 15, none with --quick",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the forwarder and the load at this nice value (e.g. -5, as root) so that "
        "other work on a shared machine disturbs the measurement less",
    )
    parser.add_argument(
        "--server-module",
        default="signaling.cli",
        help="run aiosfu as `python -m MODULE serve` (benchmarks.gc_probe logs GC pauses)",
    )
    parser.add_argument(
        "--logs",
        type=Path,
        help="keep every process's output here (default: a temporary folder, deleted)",
    )
    parser.add_argument(
        "--transport-cc",
        choices=("on", "off"),
        default="on",
        help="subscribers negotiate transport-cc and send feedback every 50 ms, as browsers do "
        "(off: the forwarder numbers nothing and gets no feedback)",
    )
    parser.add_argument(
        "--congestion-control",
        choices=("on", "off"),
        default="on",
        help="aiosfu chooses layers within each subscriber's estimate, pauses what does not fit "
        "and paces (off: `sfu serve --no-congestion-control`, estimates are still made)",
    )
    args = parser.parse_args(argv)
    forwarders = tuple(f.strip() for f in args.forwarders.split(",") if f.strip())
    unknown = set(forwarders) - set(FORWARDERS)
    if unknown or not forwarders:
        parser.error(f"unknown forwarder(s) {sorted(unknown)}; choose from {FORWARDERS}")
    cases = args.case or (QUICK_CASES if args.quick else DEFAULT_CASES)
    try:
        parsed = tuple(Case.parse(c) for c in cases)
        profile = Case.parse(args.profile) if args.profile else None
    except ValueError as exc:
        parser.error(str(exc))
    janus = bool(set(forwarders) & set(JANUS_FORWARDERS))
    netns = janus if args.netns is None else args.netns
    if janus and not netns:
        parser.error("Janus runs only in a network namespace (drop --no-netns)")
    if netns and os.geteuid() != 0:
        parser.error("a network namespace needs root (or run --forwarders aiosfu --no-netns)")
    if janus and shutil.which("janus") is None:
        parser.error("janus is not installed: apt-get install -y janus (or --forwarders aiosfu)")
    if profile is not None and shutil.which("py-spy") is None and not _venv_py_spy().exists():
        parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    return Options(
        cases=parsed,
        forwarders=forwarders,
        runs=1 if args.quick else args.runs,
        seconds=3.0 if args.quick else args.seconds,
        warmup=0.5 if args.quick else args.warmup,
        payload=args.payload,
        fps=args.fps,
        netns=netns,
        janus_configs=args.janus_configs,
        out=args.out,
        profile=profile,
        subscriber_processes=args.subscriber_processes,
        nice=args.nice,
        server_module=args.server_module,
        logs=args.logs,
        transport_cc=args.transport_cc,
        congestion_control=args.congestion_control,
        quiet=args.quiet if args.quiet is not None else math.inf if args.quick else 15.0,
    )


def _venv_py_spy() -> Path:
    return Path(sys.executable).parent / "py-spy"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    options = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop_on_sigterm)
    document = run(options)
    paths = report.save(document, options.out)
    print(report.tables(document))
    if "profile" in document:
        print(report.profile_table(options.out / document["profile"]["raw"]))
    print("saved: " + ", ".join(str(p) for p in paths))
    return document


if __name__ == "__main__":
    main()
