"""Forwarded packets/s at saturation, one worker against two, each under a CPU cap.

    .venv/bin/python -m benchmarks.saturation --workers 1,2 --quota 0.4      # root: cgroups
    .venv/bin/python -m benchmarks.saturation --quick

Issue 13's target: with 2 workers the aggregate at saturation is >= 1.8x one worker's. On a
machine with few cores the forwarder would share them with its load generators, so every
process that forwards media gets a cgroup capped at ``--quota`` of one core: ``sfu serve``
itself with ``--workers 1`` (it forwards in-process), each worker with ``--workers 2`` (the
supervisor only relays signaling and stays uncapped). For each worker count, rooms of one
publisher and ``--subscribers`` subscribers at ``--rate`` packets/s are added ``--step`` at a
time, each step a fresh server and load measured by :func:`benchmarks.forwarding.run_trial`,
until a step loses more than ``--max-loss`` % or its end-to-end p99 exceeds ``--max-p99`` ms.
The result is the forwarded packets/s of the last good step per worker count and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import forwarding, metrics
from benchmarks.cases import AIOSFU_WORKERS, Case, Trial
from benchmarks.cgroups import CpuCaps
from benchmarks.processes import Network, Process, namespace, stop_on_sigterm

#: worker count -> the forwarder of benchmarks.forwarding that runs it
FORWARDER_OF = {1: "aiosfu"} | {n: name for name, n in AIOSFU_WORKERS.items()}
RESULTS = forwarding.RESULTS
#: a capped process using this share of its quota in the window is at its cap
AT_CAP = 0.9


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    workers: tuple[int, ...]
    quota: float
    period_us: int
    subscribers: int
    rate: int
    first: int  # rooms at the first step
    step: int
    max_rooms: int
    max_loss_pct: float
    max_p99_ms: float
    retries: int  # a failing step is measured again this many times before the ramp ends
    base: forwarding.Options  # seconds, warmup, netns, payload... of every step


def good(trial: Trial, settings: Settings) -> tuple[bool, str]:
    """Whether a step is within the criterion, and why not."""
    loss_pct = 100 * trial.lost / trial.expected if trial.expected else math.inf
    p99 = trial.latency_ms.get("p99", math.nan)
    if loss_pct > settings.max_loss_pct:
        return False, f"loss {loss_pct:.3f} % > {settings.max_loss_pct} %"
    if not p99 <= settings.max_p99_ms:  # also NaN: nothing arrived
        return False, f"p99 {p99:.1f} ms > {settings.max_p99_ms} ms"
    return True, ""


def capper(caps: CpuCaps, workers: int, network: Network) -> Callable[[Process, str], None]:
    """``on_server_start`` for run_trial: the processes that forward media into cgroups."""

    def cap(server: Process, url: str) -> None:
        if workers == 1:
            caps.cap("server", server.pid)
            return
        health = url.replace("ws://", "http://").removesuffix("/ws") + "/healthz"
        text = metrics.fetch(network, health)
        listed = json.loads(text).get("workers", []) if text else []
        pids = {w["index"]: w.get("pid") for w in listed}
        if len(pids) != workers or None in pids.values():
            raise RuntimeError(f"/healthz lists workers {listed}, want {workers} with pids")
        for index, pid in sorted(pids.items()):
            caps.cap(f"worker-{index}", pid)

    return cap


def run_step(
    settings: Settings, workers: int, rooms: int, network: Network, workdir: Path
) -> dict[str, Any]:
    """One step: a fresh server (its forwarding processes capped) and ``rooms`` rooms of load."""
    case = Case(rooms, settings.subscribers, settings.rate)
    forwarder = FORWARDER_OF[workers]
    prefix = f"aiosfu-sat-{os.getpid()}-w{workers}-r{rooms}"
    with CpuCaps(settings.quota, settings.period_us, prefix) as caps:
        options = dataclasses.replace(
            settings.base, cases=(case,), on_server_start=capper(caps, workers, network)
        )
        trial = forwarding.run_trial(forwarder, case, 0, options, network, workdir)
        throttle = caps.stats()
    ok, why = good(trial, settings)
    data = trial.as_dict()
    if trial.workers is not None:
        capped_cpu = [w["cpu_s"] for w in trial.workers]
    else:
        capped_cpu = [trial.server_cpu_s]
    step = {
        "rooms": rooms,
        "case": case.key,
        "offered_per_s": case.forwarded_rate,
        "forwarded_per_s": data["forwarded_per_s"],
        "loss_pct": 100 * trial.lost / trial.expected if trial.expected else None,
        "latency_ms": trial.latency_ms,
        "sfu_latency_ms": trial.sfu_latency_ms,
        # per capped process, % of one core in the window: near 100 x quota = at its cap
        "capped_cpu_pct": [None if c is None else 100 * c / trial.seconds for c in capped_cpu],
        "rooms_per_worker": [w["rooms"] for w in trial.workers] if trial.workers else None,
        # each cgroup's cpu.stat over the whole step (start, warmup, window)
        "throttled": throttle,
        "good": ok,
        "why": why,
        "trial": data,
    }
    cpu = ", ".join(f"{c:.0f}" for c in step["capped_cpu_pct"] if c is not None)
    print(
        f"  w{workers} {case.key:>10} {step['forwarded_per_s']:8.0f} pkt/s "
        f"loss {step['loss_pct'] or 0:.3f} % p99 {trial.latency_ms.get('p99', math.nan):6.1f} ms "
        f"capped CPU {cpu} %  {'ok' if ok else 'STOP: ' + why}",
        flush=True,
    )
    return step


def limit(step: dict[str, Any], quota: float) -> str:
    """What ended a ramp: ``forwarder`` when a capped process used its quota and the load's
    sockets dropped nothing; ``load`` when the publisher's or subscribers' receive buffers
    overflowed (they fell behind: the machine, not the forwarder); else ``unclear``."""
    drops = step["trial"]["udp_drops"]
    if drops["publisher"] + drops["subscribers"] > 0:
        return "load"
    cpus = [c for c in step["capped_cpu_pct"] if c is not None]
    if cpus and max(cpus) >= AT_CAP * 100 * quota:
        return "forwarder"
    return "unclear"


def ramp(settings: Settings, workers: int, network: Network, workdir: Path) -> dict[str, Any]:
    """Steps of more rooms until one fails the criterion (or ``max_rooms``)."""
    steps: list[dict[str, Any]] = []
    rooms = settings.first
    while rooms <= settings.max_rooms:
        # a failing step is measured again (--retries): one burst of the machine's other
        # work must not end the ramp; the failed attempts are kept in the step
        failures: list[dict[str, Any]] = []
        for attempt in range(settings.retries + 1):
            step_dir = workdir / f"w{workers}-r{rooms}-{attempt}"
            step_dir.mkdir(parents=True, exist_ok=True)
            step = run_step(settings, workers, rooms, network, step_dir)
            if step["good"]:
                break
            failures.append(step)
        step["failed_attempts"] = [f["why"] for f in failures if f is not step]
        steps.append(step)
        if not step["good"]:
            break
        rooms += settings.step
    passed = [s for s in steps if s["good"]]
    last = passed[-1] if passed else None
    failed = steps[-1] if steps and not steps[-1]["good"] else None
    limited_by = None if failed is None else limit(failed, settings.quota)
    return {
        "workers": workers,
        "forwarder": FORWARDER_OF[workers],
        "steps": steps,
        "last_good_rooms": last["rooms"] if last else None,
        "forwarded_per_s": last["forwarded_per_s"] if last else None,
        # the capacity lies between the last good step and what the failing one offered
        "failed_offered_per_s": failed["offered_per_s"] if failed else None,
        "saturated": failed is not None,
        "limited_by": limited_by,
    }


def run(settings: Settings) -> dict[str, Any]:
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="aiosfu-sat-") as tmp:
        workdir = settings.base.logs or Path(tmp)
        if settings.base.netns:
            with namespace(f"aiosfu-sat-{os.getpid()}") as network:
                ramps = _ramps(settings, network, workdir)
        else:
            network = Network()
            ramps = _ramps(settings, network, workdir)
    by_workers = {r["workers"]: r for r in ramps}
    one, two = by_workers.get(1), by_workers.get(2)
    ratio = ratio_range = None
    if one and two and one["forwarded_per_s"] and two["forwarded_per_s"]:
        ratio = two["forwarded_per_s"] / one["forwarded_per_s"]
        if one["failed_offered_per_s"] and two["failed_offered_per_s"]:
            # the steps' width bounds what the ratio can be
            ratio_range = [
                two["forwarded_per_s"] / one["failed_offered_per_s"],
                two["failed_offered_per_s"] / one["forwarded_per_s"],
            ]
    meta = forwarding.machine(settings.base, network, started)
    meta.update(
        quota=settings.quota,
        period_us=settings.period_us,
        criterion={
            "max_loss_pct": settings.max_loss_pct,
            "max_p99_ms": settings.max_p99_ms,
            "retries": settings.retries,
        },
        room=f"1→{settings.subscribers} x {settings.rate}/s",
        rooms={"first": settings.first, "step": settings.step, "max": settings.max_rooms},
    )
    # a ratio says what the target asks only when the forwarder ended both ramps
    both_capped = bool(one and two and one["limited_by"] == two["limited_by"] == "forwarder")
    return {
        "meta": meta,
        "ramps": ramps,
        "ratio_w2_w1": ratio,
        "ratio_range": ratio_range,
        "ratio_at_caps": both_capped,
    }


def _ramps(settings: Settings, network: Network, workdir: Path) -> list[dict[str, Any]]:
    network = dataclasses.replace(network, nice=settings.base.nice)
    return [ramp(settings, workers, network, workdir) for workers in settings.workers]


def table(document: dict[str, Any]) -> str:
    meta = document["meta"]
    lines = [
        f"saturation: rooms of {meta['room']}, each forwarding process capped at "
        f"{meta['quota']:g} of a core; last step with loss <= "
        f"{meta['criterion']['max_loss_pct']} % and p99 <= {meta['criterion']['max_p99_ms']} ms",
        f"{'workers':>7} {'rooms':>5} {'forwarded/s':>11} {'failed at/s':>11} {'limited by':>10}",
    ]
    for r in document["ramps"]:
        forwarded = f"{r['forwarded_per_s']:.0f}" if r["forwarded_per_s"] else "-"
        failed = r["failed_offered_per_s"] or "-"
        lines.append(
            f"{r['workers']:>7} {r['last_good_rooms'] or '-':>5} {forwarded:>11} "
            f"{failed:>11} {r['limited_by'] or 'not reached':>10}"
        )
    ratio = document["ratio_w2_w1"]
    if ratio:
        bounds = document["ratio_range"]
        within = f", steps allow {bounds[0]:.2f}-{bounds[1]:.2f}x" if bounds else ""
        caveat = "" if document["ratio_at_caps"] else "; NOT both limited by the forwarder"
        lines.append(f"w2 / w1: {ratio:.2f}x{within} (target >= 1.8x{caveat})")
    else:
        lines.append("w2 / w1: -")
    return "\n".join(lines)


def save(document: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = document["meta"]["started"].replace(":", "").replace("-", "")[:15]
    path = out / f"saturation-{stamp}.json"
    path.write_text(json.dumps(_finite(document), indent=1) + "\n")
    return path


def _finite(value: Any) -> Any:
    """NaN and infinities as null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,2", help="worker counts, from 1 and 2")
    parser.add_argument("--quota", type=float, default=0.4, help="cores per capped process")
    parser.add_argument(
        "--period-ms",
        type=float,
        default=10.0,
        help="the cap's accounting period; short, so that a capped process waits at most "
        "(1 - quota) x period for CPU, which a 100 ms period would add to the latency",
    )
    parser.add_argument("--subscribers", type=int, default=4, help="per room (one publisher)")
    parser.add_argument("--rate", type=int, default=2000, help="packets/s per publisher")
    parser.add_argument("--first", type=int, default=1, help="rooms at the first step")
    parser.add_argument("--step", type=int, default=1, help="rooms added per step")
    parser.add_argument("--max-rooms", type=int, default=16)
    parser.add_argument("--max-loss", type=float, default=0.1, help="%% lost that ends the ramp")
    parser.add_argument("--max-p99", type=float, default=50.0, help="e2e p99 ms that ends it")
    parser.add_argument(
        "--retries", type=int, default=1, help="a failing step is measured again this often"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per step")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 s steps, 2 rooms at most of 1→2 x 300/s"
    )
    parser.add_argument("--subscriber-processes", type=int, default=2)
    parser.add_argument("--netns", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--logs", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        workers = tuple(int(w) for w in args.workers.split(",") if w.strip())
    except ValueError:
        parser.error(f"--workers {args.workers!r}: comma-separated integers")
    if not workers or set(workers) - set(FORWARDER_OF):
        parser.error(f"--workers: from {sorted(FORWARDER_OF)}")
    if os.geteuid() != 0:
        parser.error("the CPU caps are cgroups: run as root")
    if args.quick:
        args.seconds, args.warmup, args.max_rooms = 2.0, 0.5, min(args.max_rooms, 2)
        args.subscribers, args.rate = 2, 300
    base = forwarding.parse_args(
        [
            "--forwarders",
            ",".join(FORWARDER_OF[w] for w in workers),
            "--netns" if args.netns else "--no-netns",
            "--runs",
            "1",
            "--seconds",
            str(args.seconds),
            "--warmup",
            str(args.warmup),
            "--subscriber-processes",
            str(args.subscriber_processes),
            "--nice",
            str(args.nice),
            *(["--logs", str(args.logs)] if args.logs else []),
        ]
    )
    settings = Settings(
        workers=workers,
        quota=args.quota,
        period_us=round(args.period_ms * 1000),
        subscribers=args.subscribers,
        rate=args.rate,
        first=args.first,
        step=args.step,
        max_rooms=args.max_rooms,
        max_loss_pct=args.max_loss,
        max_p99_ms=args.max_p99,
        retries=args.retries,
        base=base,
    )
    return settings, args.out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    settings, out = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop_on_sigterm)
    started = time.monotonic()
    document = run(settings)
    document["meta"]["duration_s"] = round(time.monotonic() - started, 1)
    path = save(document, out)
    print(table(document))
    print(f"saved: {path}")
    return document


if __name__ == "__main__":
    main()
