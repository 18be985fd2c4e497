"""The memory benchmark runs end to end: 4 participants in rooms of 2, 2 steps, the tracemalloc
probe on (~15 s). Memory per participant is a number to report, never asserted here; the real
run (120 participants) is done by hand (benchmarks/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import memory

pytestmark = pytest.mark.e2e


def test_small_run_connects_everyone_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = memory.main(
        [
            "--participants",
            "4",
            "--room-size",
            "2",
            "--steps",
            "2",
            "--client-processes",
            "2",
            "--quick",
            "--tracemalloc",
            "--out",
            str(tmp_path),
        ]
    )
    assert document["connected"] == document["participants"] == 4
    phases = [(s["phase"], s["participants"], s["sending"]) for s in document["samples"]]
    assert phases == [
        ("baseline", 0, 0),
        ("idle", 2, 0),
        ("idle", 4, 0),
        ("media", 4, 2),
        ("media", 4, 4),
    ]
    for sample in document["samples"]:
        assert sample["rss_mb"] > 0 and sample["threads"] >= 1
    assert document["samples"][-1]["server_participants"] == 4
    sent = sum(c["audio_sent"] + c["video_sent"] for c in document["clients"])
    assert sent > 0 and sum(c["received"] for c in document["clients"]) > 0

    summary = document["summary"]
    for key in (
        "rss_idle_mb_per_participant",
        "rss_with_media_mb_per_participant",
        "rss_media_extra_mb_per_participant",
        "rss_growth_mb_per_participant",
        "threads",
        "baseline_threads",
    ):
        assert summary[key] is not None, key
    for phase in ("idle", "media"):
        sites = document["tracemalloc"][phase]["sites"]
        assert sites and {"site", "bytes_per_participant"} <= sites[0].keys()

    saved = json.loads(next(tmp_path.glob("memory-*.json")).read_text())
    assert saved["summary"] == json.loads(json.dumps(summary))
    out = capsys.readouterr().out
    assert "MB/participant" in out and "tracemalloc" in out
