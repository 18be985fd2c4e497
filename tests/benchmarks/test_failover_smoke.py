"""The failover benchmark runs end to end: one call on ``sfu serve --workers 2``, its worker
killed, both clients receiving video again (~6 s); and one call through two nodes in network
namespaces, its node killed (~15 s, root). The time is printed, never asserted
(benchmarks/README.md has the runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import failover
from tests.cluster.netns import namespaces, require_namespaces

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


def test_one_trial_kills_the_room_s_node_and_the_call_comes_back(tmp_path: Path) -> None:
    """``--kill node``: two nodes in network namespaces, one client through each; the room's
    node SIGKILLed, both join again on the node left (~3 s: its Redis key must expire first)."""
    require_namespaces()
    before = namespaces()
    document = failover.main(["--kill", "node", "--trials", "1", "--out", str(tmp_path)])
    (trial,) = document["trials"]
    assert trial["errors"] == [] and trial["rejoins"] == 2
    assert sorted(trial["through_killed"]) == [False, True]  # one entered through each node
    # both on the node left: the one of the killed node went on to its next URL
    (survivor,) = set(trial["urls_after"])
    assert document["meta"]["kill"] == "node" and survivor != trial["url"]
    assert len(trial["seconds"]) == 2 and all(s > 0 for s in trial["seconds"])
    assert document["summary"]["clients_without_frame"] == 0
    saved = json.loads(next(tmp_path.glob("failover-*.json")).read_text())
    assert saved["trials"][0]["pid"] == trial["pid"]
    assert namespaces() <= before  # the cluster's namespaces are gone
    print(f"\nnode killed → next frame after {', '.join(f'{s:.2f}' for s in trial['seconds'])} s")
