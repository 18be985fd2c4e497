"""``python -m loadtest --simulcast`` against the real server: 1 publisher sends three
pre-encoded layers, 3 subscribers spread over them and each moves to the next layer once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, SfuServer

pytestmark = pytest.mark.e2e

LAYERS = ["160x90", "320x180", "640x360"]


def test_subscribers_spread_over_the_layers_each_get_theirs(
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
        "4",
        "--publishers",
        "1",
        "--simulcast",
        "--layers",
        "160x90@60k,320x180@150k,640x360@400k",
        "--subscriber-layers",
        "cycle",
        "--switch-every",
        "4",  # one switch each, about a second before the end
        "--duration",
        "5",
        "--ramp",
        "1",
        "--output",
        str(output),
        "--no-progress",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    print(done.stdout)
    report = json.loads((output / "report.json").read_text())

    assert report["joins"]["succeeded"] == 4
    assert report["config"]["simulcast"] == LAYERS
    assert [layer["size"] for layer in report["media"]["video_layers"]] == LAYERS
    layers = report["layers"]
    streams = {s["subscriber"]: s for s in layers["streams"]}
    assert sorted(streams) == ["load-0-1", "load-0-2", "load-0-3"]
    # spread: subscriber k of the room asks for layer k mod 3 first, then the next one
    for name, item in streams.items():
        first = int(name[-1]) % 3
        asked = [layer for _, layer in item["asked_layers"]]
        assert asked[:2] == [first, (first + 1) % 3], item
        got = [size for _, size in item["changes"]]
        assert LAYERS[first] in got, item
        # on the last layer asked for, or the one before if that ask came in the last second
        assert item["final"] == item["expected"] in [LAYERS[a] for a in asked], item
    assert layers["on_expected_layer"] == {"checked": 3, "matched": 3}
    moved = layers["settings_to_layer_ms"]
    assert moved["missing"] == 0
    assert moved.get("count", 0) + moved["already"] >= 3
    assert set(layers["by_layer"]) == set(LAYERS)
    # the timeline: between the switches, one subscriber on each layer
    hold = [row for row in report["timeline"] if row["phase"] == "hold"]
    assert any(row["video_layers"] == dict.fromkeys(LAYERS, 1) for row in hold), hold
    assert sum(hold[-1]["video_layers"].values()) == 3
    assert sum(row["layer_switches"] for row in report["timeline"]) == layers["switches"]
    # the layers' video is matched for latency through the server's descriptor rewrite
    assert report["latency_ms"]["count"] >= report["packets"]["hold"]["received"] * 0.9
    assert report["freezes"]["count"] == 0
    assert report["sdp"]["server_errors"] == {}
    assert "layers received" in done.stdout and "setTrackSettings → layer" in done.stdout
    assert (output / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
