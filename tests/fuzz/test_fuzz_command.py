"""CI's smoke of scripts/fuzz: every target runs a few seconds (coverage-guided when atheris is
installed) and finds nothing. Long runs are by hand: ``scripts/fuzz all 600``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.harnesses import TARGETS

ROOT = Path(__file__).parents[2]
SECONDS = 4


@pytest.mark.timeout(60 + len(TARGETS) * (SECONDS + 15))
def test_every_target_runs_clean(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        [str(ROOT / "scripts" / "fuzz"), "all", str(SECONDS), "--dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    report = result.stdout + result.stderr[-4000:]
    assert result.returncode == 0, report
    rows = {
        m.group(1): (m.group(2), int(m.group(3)))
        for m in re.finditer(r"^(\w+)\s+(atheris|random)\s+(\d+)\s+\d+\s+ok$", result.stdout, re.M)
    }
    assert set(rows) == set(TARGETS), report
    for name, (mode, inputs) in rows.items():
        assert inputs > 0, f"{name} ran no input\n{report}"
        # the run's record, beside the corpus it built on
        lines = (tmp_path / name / "runs.jsonl").read_text().splitlines()
        assert len(lines) == 1, lines
        record = json.loads(lines[0])
        assert (record["target"], record["mode"], record["inputs"]) == (name, mode, inputs)
        assert record["crash"] is None and record["seconds"] >= SECONDS and record["commit"]
