"""Transport-cc's CPU cost, measured in pairs: two aiosfu servers side by side, one window.

    .venv/bin/python -m benchmarks.tcc_pairs --case 4@2000 --case 16@2000 --runs 5

Each run starts two aiosfu servers under the same load at once: the subscribers of one negotiate
transport-cc and send feedback every 50 ms, as browsers do; those of the other keep the same
bookkeeping without (the forwarding benchmark's ``aiosfu-no-tcc``). Both are measured over one
window. Whatever else the machine does in it falls on both alike, so the ratio of their CPU per
forwarded packet holds still where two windows measured one after the other (the forwarding
benchmark's way) move by more than the 10 % in question on a shared machine. The two do share
the cores, each seeing the other as load; which one starts first alternates per run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.cases import AIOSFU, AIOSFU_NO_TCC, Case, Trial
from benchmarks.forwarding import READY_TIMEOUT, RESULTS, Options, machine, run_trial
from benchmarks.forwarding import parse_args as forwarding_args
from benchmarks.processes import Network

WITH_TCC = AIOSFU[0]


def paired_trial(
    case: Case, run: int, options: Options, network: Network, workdir: Path
) -> dict[str, Trial]:
    """One run of ``case``: both servers, one window."""
    barrier = threading.Barrier(len(AIOSFU), timeout=4 * READY_TIMEOUT)
    paired = dataclasses.replace(options, window_barrier=barrier)
    trials: dict[str, Trial] = {}
    errors: list[BaseException] = []

    def one(forwarder: str) -> None:
        directory = workdir / f"{case.key}-{run}-{forwarder}"
        directory.mkdir(parents=True, exist_ok=True)
        try:
            trials[forwarder] = run_trial(forwarder, case, run, paired, network, directory)
        except BaseException as exc:  # the other side must not wait for ever
            errors.append(exc)
            barrier.abort()

    order = AIOSFU if run % 2 == 0 else AIOSFU[::-1]
    threads = [threading.Thread(target=one, args=(f,), name=f) for f in order]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return trials


def measure(options: Options, workdir: Path) -> dict[str, Any]:
    network = Network(nice=options.nice)
    started = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for case in options.cases:
        for run in range(options.runs):
            trials = paired_trial(case, run, options, network, workdir)
            on, off = trials[WITH_TCC], trials[AIOSFU_NO_TCC]
            ratio = on.cpu_us_per_packet / off.cpu_us_per_packet
            print(
                f"{case.key:>10} run {run + 1}: transport-cc {on.cpu_us_per_packet:6.2f} µs/pkt,"
                f" without {off.cpu_us_per_packet:6.2f} µs/pkt: {ratio - 1:+.1%}"
                f"  (lost {on.lost} / {off.lost})",
                flush=True,
            )
            rows.append(
                {"case": case.key, "run": run, "ratio": ratio}
                | {name: trial.as_dict() for name, trial in trials.items()}
            )
    summary = {
        case.key: {
            "median_ratio": statistics.median(r["ratio"] for r in rows if r["case"] == case.key),
            "ratios": [round(r["ratio"], 4) for r in rows if r["case"] == case.key],
        }
        for case in options.cases
    }
    return {"meta": machine(options, network, started), "runs": rows, "summary": summary}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", action="append", help="K@RATE (default 4@2000 and 16@2000)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--nice", type=int, default=0, help="the servers' nice level")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--logs", type=Path, help="keep every process's output here")
    args = parser.parse_args(argv)
    forwarded = ["--no-netns", "--forwarders", ",".join(AIOSFU), "--nice", str(args.nice)]
    for case in args.case or ("4@2000", "16@2000"):
        forwarded += ["--case", case]
    forwarded += ["--runs", str(args.runs), "--seconds", str(args.seconds)]
    options = forwarding_args(forwarded)
    with tempfile.TemporaryDirectory(prefix="aiosfu-tcc-pairs-") as tmp:
        document = measure(options, args.logs or Path(tmp))
    for key, result in document["summary"].items():
        cost = result["median_ratio"] - 1
        print(f"{key}: transport-cc costs {cost:+.1%} (median of {args.runs})")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"tcc-pairs-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(document, indent=1))
    print(f"saved: {path}")
    return document


if __name__ == "__main__":
    main()
