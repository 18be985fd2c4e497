"""``python -m loadtest`` against the real server, tiny: 1 room x 2 participants x 4 s."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, SfuServer

pytestmark = pytest.mark.e2e


def test_a_tiny_run_joins_everyone_and_writes_the_report(
    sfu_server: SfuServer, tmp_path: Path
) -> None:
    output = tmp_path / "report"
    command = [
        sys.executable,
        "-m",
        "loadtest",
        sfu_server.url,
        "--rooms",
        "1",
        "--participants",
        "2",
        "--duration",
        "4",
        "--ramp",
        "1",
        "--output",
        str(output),
        "--no-progress",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    print(done.stdout)

    report = json.loads((output / "report.json").read_text())
    assert report["joins"]["succeeded"] == 2
    assert report["joins"]["failed"] == 0
    assert report["packets"]["hold"]["received"] > 0
    assert report["packets"]["hold"]["sent"] > 0
    assert report["latency_ms"]["count"] > 0
    assert report["time_to_first_frame_ms"]["count"] == 2  # each sees the other's video
    tracks = report["tracks"]
    assert (tracks["published"], tracks["participants_checked"]) == (4, 2)
    assert tracks["participants_missing_any"] == tracks["missing"] == 0
    sdp = report["sdp"]
    # the server's offer: the client's 2 m-lines and the other's 2 tracks
    assert sdp["largest_received"]["m_lines"] == 4
    assert sdp["largest_sent"]["m_lines"] in (2, 4)  # its offer, or its answer
    # a client's error is counted by its class; what it said is in the load test's log
    assert sdp["sent_over_budget"] == 0 and sdp["server_errors"] == {}, done.stderr[-4000:]
    assert "largest SDP" in done.stdout and "tracks received" in done.stdout
    assert report["bitrate_per_subscriber_kbps"]["min"] > 0
    assert report["server"]["metrics_available"]
    assert report["server"]["cpu_percent_mean"] is not None
    assert report["generator"]["cpu_percent_mean"] is not None
    assert len(report["timeline"]) >= 4
    assert all(row["freezes"] == 0 for row in report["timeline"])
    assert (output / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "time to first frame" in done.stdout
