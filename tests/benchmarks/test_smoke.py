"""The forwarding benchmark runs end to end: aiosfu only, quick mode (1 → 2 subscribers, ~3 s).

The Janus side-by-side needs Janus and a network namespace and takes minutes: it is run by hand
(benchmarks/README.md), not here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import forwarding
from benchmarks.cases import PERCENTILES, percentile_key

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
