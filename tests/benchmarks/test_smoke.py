"""The forwarding benchmark runs end to end: aiosfu only, quick mode (1 → 2 subscribers, ~3 s).

The Janus side-by-side needs Janus and a network namespace and takes minutes: it is run by hand
(benchmarks/README.md), not here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import forwarding, tcc_pairs
from benchmarks.cases import AIOSFU, AIOSFU_NO_TCC, PERCENTILES, percentile_key

pytestmark = pytest.mark.e2e


def test_quick_run_of_aiosfu_produces_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = forwarding.main(
        ["--quick", "--forwarders", "aiosfu", "--no-netns", "--out", str(tmp_path)]
    )
    (trial,) = document["trials"]
    assert trial["case"] == "2@2000" and trial["forwarder"] == "aiosfu"
    assert trial["sent"] > 0
    assert trial["received"] > 0
    assert trial["forwarded_per_s"] > 0
    assert trial["server_cpu_s"] > 0 and math.isfinite(trial["cpu_us_per_packet"])
    latency = trial["latency_ms"]
    for p in PERCENTILES:
        assert latency[percentile_key(p)] > 0
    assert latency["p50"] <= latency["p99"] <= latency["p99.9"]

    (row,) = document["summary"]
    assert row["forwarded_per_s"] > 0 and row["latency_ms"]["p99"] > 0

    saved = json.loads(next(tmp_path.glob("forwarding-*.json")).read_text())
    assert saved["trials"][0]["received"] == trial["received"]
    assert "1→2 x 2,000/s" in capsys.readouterr().out


def test_transport_cc_pairs_measure_both_servers_in_one_window(tmp_path: Path) -> None:
    document = tcc_pairs.main(
        ["--case", "2@500", "--runs", "1", "--seconds", "2", "--out", str(tmp_path)]
    )
    (row,) = document["runs"]
    with_tcc, without = row[AIOSFU[0]], row[AIOSFU_NO_TCC]
    for trial in (with_tcc, without):
        assert trial["received"] > 0 and trial["server_cpu_s"] > 0
    # both windows opened at the barrier and ran the same length
    assert abs(with_tcc["seconds"] - without["seconds"]) < 0.2
    assert row["ratio"] == with_tcc["cpu_us_per_packet"] / without["cpu_us_per_packet"]
    assert document["summary"]["2@500"]["median_ratio"] == row["ratio"]
    assert next(tmp_path.glob("tcc-pairs-*.json"))


def test_quick_run_of_two_workers_reads_the_whole_server(tmp_path: Path) -> None:
    quick = ["--quick", "--forwarders", "aiosfu-w2", "--no-netns", "--case", "2x2@500"]
    document = forwarding.main([*quick, "--out", str(tmp_path)])
    (trial,) = document["trials"]
    assert trial["forwarder"] == "aiosfu-w2" and trial["case"] == "2x2@500"
    assert trial["sent"] > 0 and trial["received"] > 0
    # the rooms' media is forwarded in the workers: their CPU and their histograms count
    workers = trial["workers"]
    assert [w["rooms"] for w in workers] == [1, 1], workers  # placement spreads a burst
    assert all(w["cpu_s"] > 0 for w in workers)
    # the tree's time includes the workers' (and the server's own, often 0 ticks here)
    assert trial["server_cpu_s"] >= sum(w["cpu_s"] for w in workers) - 1e-9
    assert trial["sfu_latency_ms"] is not None and trial["sfu_latency_ms"]["p99"] > 0
    assert "rooms per worker: worker 0: 1, worker 1: 1" in trial["notes"]

    (row,) = document["summary"]
    assert row["forwarder"] == "aiosfu-w2" and row["forwarded_per_s"] > 0
    assert row["rooms_per_worker"] == [[1, 1]]
