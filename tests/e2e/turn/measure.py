"""Join-to-first-frame through TURN vs direct, a few runs of each (run as root, with coturn):

    python -m tests.e2e.turn.measure --runs 5

Each run: a new subscriber process joins a room where the publisher sends, and reports the
seconds from sending ``join`` to its first decoded frame (harness.py's network). "turn": from
the subscriber's namespace, through coturn; "direct": next to the server, on 127.0.0.1, the
server without TURN servers. Prints one JSON line per run and a summary (median, min, max).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from tests.e2e.turn.harness import call, subscribe, turn_testbed

SECRET = "measure-turn-secret"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"turn": [], "direct": []}
    with tempfile.TemporaryDirectory() as tmp, turn_testbed(Path(tmp), SECRET) as (link, turn):
        for how, env, extra in (
            ("turn", {"SFU_TURN_SECRET": SECRET}, ("--turn-url", turn.url)),
            ("direct", {}, ()),
        ):
            with call(link, Path(tmp), how, env, *extra) as server:
                for _ in range(args.runs):
                    report = subscribe(link, server, how, behind_turn=how == "turn", within=15)
                    print(json.dumps({"how": how, **report}), flush=True)
                    if report["frame"] is not None:
                        times[how].append(report["frame"])
    for how, values in times.items():
        if values:
            print(
                f"{how}: n={len(values)} median={statistics.median(values):.3f} s "
                f"min={min(values):.3f} max={max(values):.3f}"
            )


if __name__ == "__main__":
    main()
