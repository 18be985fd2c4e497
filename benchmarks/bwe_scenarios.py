"""Bandwidth adaptation scenarios over a shaped link: time series, a plot each, the targets.

    .venv/bin/python -m benchmarks.bwe_scenarios [--scenario NAME ...] [--out DIR]

The call of the shaped-link tests (``tests/e2e/shaped_call.py``): the real server, one
simulcast publisher (160x90 / 320x180 / 640x360 VP8 at 0.1 / 0.3 / 1.2 Mbit/s, 20 fps), an
unshaped subscriber on 127.0.0.1 and a shaped one behind a veth whose downlink ``tc tbf``
limits (queue of 150 ms, tail drop). Scenarios (``--scenario``, repeatable, default all):

- ``step-down``: both on the top layer, then the link drops to 400 kbit/s for 22 s;
- ``lift``: the shaped subscriber joins a 400 kbit/s link; after 15 s the limit goes;
- ``loss``: 5 % random loss on the shaped subscriber's media (seeded), no limit, 30 s;
- ``ramp``: 2.5 Mbit/s down to 300 kbit/s in 20 one-second steps, 6 s there, back up
  likewise, then no limit.

Each writes ``bwe-<scenario>-<time>.json`` (every 0.25 s: the limit, each subscriber's received
bitrate, frame rate and layer; the server's ``connectionQuality`` and ``streamState`` events;
the link's samples; the numbers) and a ``.png`` of the same (``benchmarks/bwe_plot.py``), and
prints the numbers of issue 10's targets. Freeze: a gap between decoded frames longer than
max(3 x the median interval, median + 150 ms) (``shaped_call``). Needs root (namespaces, tc).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.bwe_plot import plot
from tests.e2e.peer_process import Observed
from tests.e2e.shaped_call import (
    TOP,
    ShapedCall,
    frame_times,
    freezes,
    layers,
    link_loss,
    on_layer,
    quality_events,
    settled_at,
    shaped_call,
    starved,
)
from tests.e2e.shaped_link import LAYERS, REPO, layer_of_width

BIN = 0.25
READY_TIMEOUT = 30.0
STEADY = 20  # frames in a row that make "on a layer"
#: Freezes that start within this many seconds of the step are the step's (the target: on a
#: fitting layer within 2 s); later ones (a probe's or a keyframe's queue) are counted apart.
STEP_WINDOW = 2.0
LIMIT = 400_000
BITRATES = {rid: bitrate for rid, _, _, bitrate in LAYERS}
Schedule = list[tuple[float, int | None]]  # (seconds after ready, limit in bit/s or None)


@dataclass(frozen=True)
class Scenario:
    name: str
    schedule: Schedule
    duration: float
    loss: float = 0.0
    limit_first: int | None = None  # a limit set before the subscribers join
    numbers: Callable[[ShapedCall, Run], dict[str, Any]] = lambda call, run: {}


@dataclass
class Run:
    ready: float  # time.monotonic() the schedule starts from
    changes: list[tuple[float, int | None]] = field(default_factory=list)  # absolute times


def fits(limit: int | None) -> set[str]:
    return {rid for rid, bitrate in BITRATES.items() if limit is None or bitrate <= limit}


def _ramp() -> Schedule:
    high, low, steps = 2_500_000, 300_000, 20
    down = [(1.0 + i, round(high - (high - low) * i / (steps - 1))) for i in range(steps)]
    up = [(27.0 + i, round(low + (high - low) * i / (steps - 1))) for i in range(steps)]
    return [*down, *up, (47.0, None)]


# --- numbers ---


def _freeze_seconds(
    seen: Observed, since: float, until: float, starting_by: float = float("inf")
) -> float:
    """Freezes within [since, until]; only those that start by ``starting_by``, if given."""
    stalls = freezes(frame_times(seen, since - 1, until), until)
    return round(sum(g for start, g in stalls if start <= starting_by), 3)


def _first_keyframe(seen: Observed, since: float, rids: set[str]) -> float | None:
    """When the first keyframe of one of ``rids`` arrived since ``since`` (before any decoder:
    the server's switch, whatever the subscriber's jitter buffer then does)."""
    return next((t for t, w, _ in seen.keyframes if t >= since and layer_of_width(w) in rids), None)


def _loss(call: ShapedCall, since: float, until: float) -> float:
    return round(link_loss(call.samples, since, until), 4)


def _rel(value: float | None, origin: float) -> float | None:
    return None if value is None else round(value - origin, 3)


def _unshaped(call: ShapedCall, since: float, until: float) -> dict[str, Any]:
    seen = call.subscribers["unshaped"].seen
    stalls = freezes(frame_times(seen, since - 1, until), until)
    return {
        "unshaped_layers": dict(layers(seen, since, until)),
        "unshaped_freeze_s": _freeze_seconds(seen, since, until),
        "unshaped_freeze_starved_s": round(
            sum(g for f in stalls if starved(f, seen, call.publisher.seen) for g in f[1:]), 3
        ),
    }


def _estimates(seen: Observed, since: float, until: float) -> list[float]:
    return [float(m["estimateBps"]) for t, m in quality_events(seen, since) if t <= until]


def step_numbers(call: ShapedCall, run: Run) -> dict[str, Any]:
    (step, limit), (end, _) = run.changes[0], (time.monotonic(), None)
    shaped = call.subscribers["shaped"].seen
    settled = settled_at(shaped, step, fits(limit))
    return {
        "fit_s": _rel(settled, step),
        "fitting_keyframe_s": _rel(_first_keyframe(shaped, step, fits(limit)), step),
        "freeze_s": _freeze_seconds(shaped, step, end),
        "freeze_step_s": _freeze_seconds(shaped, step, end, step + STEP_WINDOW),
        "loss_after_settle": None if settled is None else _loss(call, settled, end),
        "loss_limited": _loss(call, step, end),
        "shaped_layers_limited": dict(layers(shaped, step, end)),
        "estimates_limited": _estimates(shaped, step, end),
        **_unshaped(call, run.ready, end),
    }


def lift_numbers(call: ShapedCall, run: Run) -> dict[str, Any]:
    lift, end = run.changes[-1][0], time.monotonic()
    shaped = call.subscribers["shaped"].seen
    top = settled_at(shaped, lift, {TOP})
    return {
        "shaped_layers_limited": dict(layers(shaped, run.ready, lift)),
        "loss_limited": _loss(call, run.ready, lift),
        "freeze_limited_s": _freeze_seconds(shaped, run.ready, lift),
        "top_s": _rel(top, lift),
        "top_keyframe_s": _rel(_first_keyframe(shaped, lift, {TOP}), lift),
        "freeze_after_lift_s": _freeze_seconds(shaped, lift, end),
        **_unshaped(call, run.ready, end),
    }


def loss_numbers(call: ShapedCall, run: Run) -> dict[str, Any]:
    end = time.monotonic()
    process = call.subscribers["shaped"]
    shaped, last = process.seen, process.seen.counters[-1]
    events = [m for t, m in quality_events(shaped, run.ready) if t <= end]
    frames = layers(shaped, run.ready, end)
    estimates = [float(e["estimateBps"]) for e in events]
    return {
        "top_share": round(frames[TOP] / max(1, sum(frames.values())), 3),
        "estimate_min": min(estimates, default=None),
        "estimate_median": statistics.median(estimates) if estimates else None,
        "reported_loss_percent": [e.get("lossPercent") for e in events],
        "dropped_share": round(last["dropped"] / max(1, last["packets"] + last["dropped"]), 4),
        "freeze_s": _freeze_seconds(shaped, run.ready, end),
        **_unshaped(call, run.ready, end),
    }


def ramp_numbers(call: ShapedCall, run: Run) -> dict[str, Any]:
    end = time.monotonic()
    shaped = call.subscribers["shaped"].seen
    bounds = [*run.changes, (end, None)]
    over = total = 0
    for (since, limit), (until, _) in itertools.pairwise(bounds):
        frames = layers(shaped, since, until)
        total += sum(frames.values())
        over += sum(n for rid, n in frames.items() if rid not in fits(limit))
    lifted = run.changes[-1][0]
    return {
        "frames_over_limit_share": round(over / max(1, total), 3),
        "loss": _loss(call, run.ready, lifted),
        "freeze_s": _freeze_seconds(shaped, run.ready, end),
        "top_after_lift_s": _rel(settled_at(shaped, lifted, {TOP}), lifted),
        **_unshaped(call, run.ready, end),
    }


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("step-down", [(8.0, LIMIT)], 30.0, numbers=step_numbers),
        Scenario("lift", [(15.0, None)], 35.0, limit_first=LIMIT, numbers=lift_numbers),
        Scenario("loss", [], 30.0, loss=0.05, numbers=loss_numbers),
        Scenario("ramp", _ramp(), 55.0, numbers=ramp_numbers),
    )
}


# --- running one ---


async def run_scenario(scenario: Scenario, workdir: Path) -> dict[str, Any]:
    async with shaped_call(workdir, loss=scenario.loss, seed=7) as call:
        if scenario.limit_first is not None:
            await call.shape(scenario.limit_first)
        want = TOP if scenario.limit_first is None else None
        waited = time.monotonic()
        unready = []
        for name, subscriber in call.subscribers.items():
            try:  # a run that never gets there is a result too: it goes on, and says so
                remaining = waited + READY_TIMEOUT - time.monotonic()
                await subscriber.wait_until(_ready(want), remaining, f"frames of {want or 'any'}")
            except AssertionError:
                unready.append(name)
        run = Run(call.mark("ready" if not unready else f"not ready: {', '.join(unready)}"))
        for at, limit in scenario.schedule:
            await asyncio.sleep(max(0.0, run.ready + at - time.monotonic()))
            run.changes.append((await call.shape(limit), limit))
        await asyncio.sleep(max(0.0, run.ready + scenario.duration - time.monotonic()))
        numbers = {"unready": unready, **scenario.numbers(call, run)}
        print(f"--- {scenario.name}\n{call.describe()}", flush=True)
        return _report(scenario, call, run, numbers)


def _ready(rid: str | None) -> Callable[[Observed], bool]:
    if rid is None:
        return lambda seen: len(seen.frames) >= STEADY
    return lambda seen: on_layer(seen, rid, 0.0, STEADY)


def _report(
    scenario: Scenario, call: ShapedCall, run: Run, numbers: dict[str, Any]
) -> dict[str, Any]:
    origin, end = run.ready, time.monotonic()
    limits = [(t, rate) for t, rate in run.changes]

    def limit_at(t: float) -> int | None:
        current = scenario.limit_first
        for at, rate in limits:
            if at <= t:
                current = rate
        return current

    series: dict[str, Any] = {"t": [], "limit_bps": []}
    for name in call.subscribers:
        series[name] = {"rx_bps": [], "fps": [], "layer": []}
    t = origin - 2.0
    while t < end:
        series["t"].append(round(t - origin, 3))
        series["limit_bps"].append(limit_at(t + BIN / 2))
        for name, subscriber in call.subscribers.items():
            _bin(series[name], subscriber.seen, t, t + BIN)
        t += BIN
    events = {
        name: [
            {"t": round(at - origin, 3), **{k: v for k, v in m.items() if k != "type"}}
            for at, m in s.seen.messages
            if m.get("type") in ("connectionQuality", "streamState")
        ]
        for name, s in call.subscribers.items()
    }
    keyframes = call.keyframes_sent()
    return {
        "scenario": scenario.name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "layers": [{"rid": r, "width": w, "height": h, "bps": b} for r, w, h, b in LAYERS],
        "schedule": [[at, rate] for at, rate in scenario.schedule],
        "limit_first": scenario.limit_first,
        "loss": scenario.loss,
        "numbers": numbers,
        "keyframes_sent": keyframes,
        "series": series,
        "events": events,
        "link": [
            {
                "t": round(s.t - origin, 3),
                "rate": s.rate,
                "sent": s.sent,
                "drops": s.qdisc.drops,
                "packets": s.qdisc.packets,
            }
            for s in call.samples
        ],
        "marks": [[round(at - origin, 3), label] for at, label in call.marks],
    }


def _bin(out: dict[str, list[Any]], seen: Observed, since: float, until: float) -> None:
    inside = [c for c in seen.counters if since <= c["t"] < until]
    before = [c for c in seen.counters if c["t"] < since]
    if inside and before:
        a, b = before[-1], inside[-1]
        out["rx_bps"].append(round(8 * (b["bytes"] - a["bytes"]) / (b["t"] - a["t"])))
    else:
        out["rx_bps"].append(None)
    frames = [w for t, w, _ in seen.frames if since <= t < until]
    out["fps"].append(round(len(frames) / (until - since), 1))
    rids = Counter(layer_of_width(w) for w in frames)
    out["layer"].append(rids.most_common(1)[0][0] if rids else None)


def _commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "sfu", "signaling")
    return git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")


# --- the command ---


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    results = {}
    for name in args.scenario or list(SCENARIOS):
        with tempfile.TemporaryDirectory(prefix=f"bwe-{name}-") as workdir:
            report = asyncio.run(run_scenario(SCENARIOS[name], Path(workdir)))
        path = args.out / f"bwe-{name}-{stamp}.json"
        path.write_text(json.dumps(report, indent=1) + "\n")
        plot(report, path.with_suffix(".png"))
        results[name] = report["numbers"]
        print(f"{name}: {json.dumps(report['numbers'])}  -> {path}", flush=True)


if __name__ == "__main__":
    main()
