"""The failover benchmark runs end to end (~6 s): one call on ``sfu serve --workers 2``, its
worker killed, both clients receiving video again. The time is printed, never asserted
(benchmarks/README.md has the 10-trial run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import failover

pytestmark = pytest.mark.e2e


def test_one_trial_kills_the_room_s_worker_and_the_call_comes_back(tmp_path: Path) -> None:
    document = failover.main(["--trials", "1", "--out", str(tmp_path)])
    (trial,) = document["trials"]
    assert trial["errors"] == [] and trial["rejoins"] == 2  # both clients joined again
    assert len(trial["seconds"]) == 2 and all(s > 0 for s in trial["seconds"])
    summary = document["summary"]
    assert summary["clients_measured"] == 2 and summary["clients_without_frame"] == 0
    assert summary["max_s"] == max(trial["seconds"])
    saved = json.loads(next(tmp_path.glob("failover-*.json")).read_text())
    assert saved["trials"][0]["pid"] == trial["pid"]
    print(f"\nworker killed → next frame after {', '.join(f'{s:.2f}' for s in trial['seconds'])} s")
