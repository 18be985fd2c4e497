"""H264 is forwarded when both ends negotiate it (VP8 and Opus are covered by every call test)."""

from __future__ import annotations

import re

import pytest

from sfu_client import PALETTE, FrameProbe, MarkerVideoTrack

from .conftest import ClientFactory

pytestmark = pytest.mark.e2e


def mline_codecs(sdp: str, mid: str) -> list[str]:
    for section in sdp.split("m=")[1:]:
        if re.search(rf"^a=mid:{re.escape(mid)}\r?$", section, re.M):
            return re.findall(r"^a=rtpmap:\d+ ([\w-]+)/", section, re.M)
    raise AssertionError(f"no m-line {mid}")


async def test_h264_publisher_reaches_subscribers_as_h264(
    make_client: ClientFactory, room: str
) -> None:
    alice = await make_client(room, "alice")
    bob = await make_client(room, "bob")
    (video,) = await alice.publish_many(
        [(MarkerVideoTrack(PALETTE[2], 160, 120, 15), "camera")], codecs=["H264"]
    )
    assert mline_codecs(alice.pc.remoteDescription.sdp, video.mid)[0] == "H264"
    assert alice.participant_id is not None
    remote = await bob.wait_for_track(alice.participant_id, "video", 20.0)
    # the server offers bob exactly the publisher's codec, which bob (aiortc) accepts
    assert [c for c in mline_codecs(bob.pc.remoteDescription.sdp, remote.mid) if c != "rtx"] == [
        "H264"
    ]
    probe = FrameProbe(remote.track)
    await probe.run(count=10, timeout=20.0)
    assert len(probe.records) == 10
    assert probe.dominant_color_index() == 2
