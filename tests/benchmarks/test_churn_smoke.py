"""The churn benchmark runs end to end (~30 s): two waves of 3 joiners, both modes, against the
real server under the census probe. It asserts what must hold whatever the machine: everyone
connects, the census sees each wave's participants while they are in, and once everyone left no
instance of a participant's classes is alive (benchmarks/heap.py WATCHED). RSS is reported,
never asserted (benchmarks/README.md has the 3 x 20 run)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from benchmarks import churn, heap

pytestmark = pytest.mark.e2e


def test_waves_join_leave_and_leave_nothing_alive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = churn.main(
        ["--waves", "2", "--joiners", "3", "--runs", "1", "--quick", "--out", str(tmp_path)]
    )
    assert [r["mode"] for r in document["results"]] == ["sequential", "concurrent"]
    for result in document["results"]:
        assert [w["connected"] for w in result["waves"]] == [3, 3], result["waves"]
        phases = [s["phase"] for s in result["samples"]]
        assert phases == [
            "baseline",
            "r1w1 joined",
            "r1w1 left",
            "r1w2 joined",
            "r1w2 left",
            "end, trimmed",
        ]
        joined = result["samples"][1]
        assert joined["server_participants"] == 3
        assert joined["alive"]["Participant"] == 3
        # 3 participants, each receiving the 2 tracks of 2 others
        assert joined["alive"]["DownTrack"] == 12
        for sample in result["samples"][2::2]:
            assert sample["server_participants"] == 0
            assert sample["alive"] == {}, sample["phase"]
            assert sample["pymalloc_live_mb"] and sample["malloc_in_use_mb"]
        assert result["summary"]["alive_at_end"] == {}
        assert result["samples"][-1]["rss_after_trim_mb"] > 0

    saved = json.loads(next(tmp_path.glob("churn-*.json")).read_text())
    assert saved["results"][1]["summary"] == json.loads(
        json.dumps(document["results"][1]["summary"])
    )
    assert "participant objects alive" in capsys.readouterr().out


def test_census_counts_live_instances_and_new_modules() -> None:
    census, baseline = heap.census()
    assert census["watched"]["sfu.participant.Participant"] == 0
    assert census["pymalloc"]["allocated_bytes"] > 0

    class Held:
        pass

    held = [Held() for _ in range(5)]
    name = "aiosfu_census_test_module"
    sys.modules[name] = types.ModuleType(name)
    try:
        again, _ = heap.census(baseline)
    finally:
        del sys.modules[name]
    changed = dict(again["types_vs_baseline"])
    assert changed[heap.type_name(held[0])] == 5
    assert name in again["modules_imported_since_baseline"]
