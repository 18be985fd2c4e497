"""``python -m loadtest URL1 URL2`` against two real ``sfu serve --redis`` nodes of one cluster
(real Redis; tests/cluster/conftest.py): the rooms go round robin over the URLs and the report
has each node's results besides the totals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, SfuServer

pytestmark = pytest.mark.e2e


def test_rooms_spread_over_two_nodes_and_each_node_reported(
    nodes: list[SfuServer], tmp_path: Path
) -> None:
    output = tmp_path / "report"
    urls = [node.url for node in nodes]
    options = ["--rooms", "2", "--participants", "2", "--duration", "4", "--ramp", "1",
               "--output", str(output), "--no-progress"]  # fmt: skip
    command = [sys.executable, "-m", "loadtest", *urls, *options]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    print(done.stdout)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"

    report = json.loads((output / "report.json").read_text())
    assert report["config"]["urls"] == urls
    assert report["joins"]["succeeded"] == 4 and report["joins"]["failed"] == 0
    assert [node["url"] for node in report["nodes"]] == urls
    for node in report["nodes"]:  # one room of two participants through each node
        assert node["rooms"] == 1
        joins = node["joins"]
        assert (joins["attempted"], joins["succeeded"], joins["failed"]) == (2, 2, 0)
        hold = node["packets"]["hold"]
        assert hold["sent"] > 0 and hold["received"] > 0 and hold["frames"] > 0
        assert node["latency_ms"]["count"] > 0
        assert node["server"]["metrics_available"]
    # the nodes' packets add up to the totals
    totals = report["packets"]["hold"]
    for key in ("sent", "received", "lost"):
        assert sum(node["packets"]["hold"][key] for node in report["nodes"]) == totals[key]
    latencies = sum(node["latency_ms"]["count"] for node in report["nodes"])
    assert latencies == report["latency_ms"]["count"]
    # the rooms live where the directory put them (the least loaded node at each claim):
    # together the nodes host both rooms and all four participants
    servers = [node["server"] for node in report["nodes"]]
    assert sum(s["rooms_hosted"] for s in servers) == 2
    assert sum(s["participants"] for s in servers) == 4
    assert report["server"]["participants"] == 4  # the cluster's /metrics, summed
    for url in urls:
        assert f"node {url}" in done.stdout
