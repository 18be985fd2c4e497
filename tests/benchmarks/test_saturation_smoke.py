"""The saturation benchmark runs end to end: quick mode (1 and 2 workers, 1 and 2 rooms of
1 → 2 x 300/s, 2 s a step), every forwarding process in a capped cgroup (needs root).

Far below saturation: this checks the tool, the caps and the JSON, not the speed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks import saturation
from benchmarks.cgroups import CpuCaps, Hierarchy

pytestmark = pytest.mark.e2e


def test_quick_ramp_caps_the_forwarders_and_writes_its_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = saturation.main(["--quick", "--quota", "0.5", "--out", str(tmp_path)])
    saved = json.loads(next(tmp_path.glob("saturation-*.json")).read_text())
    assert saved["meta"]["quota"] == 0.5 and saved["meta"]["room"] == "1→2 x 300/s"
    assert set(saved) >= {"ramps", "ratio_w2_w1", "ratio_range", "ratio_at_caps"}

    one, two = saved["ramps"]
    assert (one["workers"], one["forwarder"]) == (1, "aiosfu")
    assert (two["workers"], two["forwarder"]) == (2, "aiosfu-w2")
    for ramp, capped in ((one, ["server"]), (two, ["worker-0", "worker-1"])):
        assert [s["rooms"] for s in ramp["steps"]] == [1, 2]  # 600 pkt/s is far from a cap
        assert ramp["saturated"] is False and ramp["limited_by"] is None
        assert ramp["last_good_rooms"] == 2
        for step in ramp["steps"]:
            assert step["good"] and step["loss_pct"] == 0.0
            assert step["forwarded_per_s"] > 0 and step["latency_ms"]["p99"] > 0
            # the cap was in force: the kernel accounted CPU periods to each group
            assert sorted(step["throttled"]) == capped
            assert all(stat["nr_periods"] > 0 for stat in step["throttled"].values())
            assert len(step["capped_cpu_pct"]) == len(capped)
        assert ramp["forwarded_per_s"] == ramp["steps"][-1]["forwarded_per_s"]
    # two rooms, one per worker: each worker forwards (and used CPU) for its own room
    assert two["steps"][1]["rooms_per_worker"] == [1, 1]
    assert all(c > 0 for c in two["steps"][1]["capped_cpu_pct"])
    assert saved["ratio_w2_w1"] == pytest.approx(two["forwarded_per_s"] / one["forwarded_per_s"])
    assert saved["ratio_range"] is None and saved["ratio_at_caps"] is False  # never saturated
    assert document["ramps"][0]["steps"][0]["case"] == "2@300"

    out = capsys.readouterr().out
    assert "w2 / w1:" in out and "NOT both limited by the forwarder" in out
    # every cgroup of the run is gone
    assert not list(Hierarchy.find().root.glob("aiosfu-sat-*"))


def test_a_cap_is_set_and_removed_also_on_failure() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with (
            pytest.raises(RuntimeError, match="step failed"),
            CpuCaps(0.5, 10_000, f"aiosfu-sat-test-{os.getpid()}") as caps,
        ):
            group = caps.cap("sleeper", sleeper.pid)
            assert (group / "cgroup.procs").read_text().split() == [str(sleeper.pid)]
            if caps.hierarchy.version == 2:
                assert (group / "cpu.max").read_text().split() == ["5000", "10000"]
            else:
                assert (group / "cpu.cfs_quota_us").read_text().strip() == "5000"
                assert (group / "cpu.cfs_period_us").read_text().strip() == "10000"
            raise RuntimeError("step failed")
        assert not group.exists()
        # the process outlived its group: back in the hierarchy's root
        assert sleeper.poll() is None
        assert str(sleeper.pid) in (caps.hierarchy.root / "cgroup.procs").read_text().split()
    finally:
        sleeper.kill()
        sleeper.wait()


def _step(cpu: list[float], publisher: int = 0, subscribers: int = 0) -> dict[str, Any]:
    drops = {"server": 0, "publisher": publisher, "subscribers": subscribers}
    return {"capped_cpu_pct": cpu, "trial": {"udp_drops": drops}}


@pytest.mark.parametrize(
    ("step", "limited_by"),
    [
        (_step([39.0]), "forwarder"),  # at 0.4: 90 % of the quota and more
        (_step([20.0, 37.0]), "forwarder"),  # one worker at its cap is enough
        (_step([39.0, 39.0], subscribers=5), "load"),  # the subscribers fell behind
        (_step([39.0], publisher=1), "load"),
        (_step([30.0, 30.0]), "unclear"),  # neither: the machine, most likely
    ],
)
def test_what_ended_a_ramp(step: dict[str, Any], limited_by: str) -> None:
    assert saturation.limit(step, 0.4) == limited_by
