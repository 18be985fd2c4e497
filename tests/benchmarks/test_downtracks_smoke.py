"""The down-track memory benchmark runs end to end (~15 s): 3 publishers, subscriptions in two
steps, against the real server under the census probe. Memory per down-track is reported, never
asserted (benchmarks/README.md has the 28-publisher run); what must hold is asserted: every
down-track is counted, one of each SFU object per down-track, and the aiortc parameter objects of
an m-line are shared with the others' instead of copied per m-line (6 codec objects per
down-track before, in the descriptions and on the transceivers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import downtracks

pytestmark = pytest.mark.e2e


def test_subscription_steps_count_down_tracks_and_share_parameters(tmp_path: Path) -> None:
    document = downtracks.main(
        ["--publishers", "3", "--steps", "2", "--quick", "--out", str(tmp_path)]
    )
    assert document["connected"] == 3
    # the first 2 publishers' tracks: 2 + 2 + 4 down-tracks; then all 3: 4 each
    assert [s["down_tracks"] for s in document["samples"]] == [0, 0, 8, 12]
    assert all(not step.get("failed") for step in document["steps"])
    summary = document["summary"]
    assert summary["down_tracks"] == 12
    assert summary["rss_kb_per_down_track"] is not None
    objects = document["objects_per_down_track"]
    for name in ("DownTrack", "OutgoingStream", "RTCRtpTransceiver", "Subscription"):
        assert objects[name] == 1.0, name
    # a connection keeps a few distinct ones (local and remote, audio and video), not per m-line
    assert objects.get("RTCRtpCodecParameters", 0) < 3
    assert objects.get("RTCRtpHeaderExtensionParameters", 0) < 3
    assert next(tmp_path.glob("downtracks-*.json")).stat().st_size > 0
