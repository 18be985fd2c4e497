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
