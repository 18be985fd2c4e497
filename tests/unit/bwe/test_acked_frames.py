"""The acknowledged rate of video that arrives in frames (packets 1 ms apart, frames 50 ms
apart): the gap before each message's frame is the frame interval, not a lost message (it was
taken for one, and the rate was None in most of the server's bandwidth log lines)."""

from __future__ import annotations

import pytest

from sfu.bwe.acked import AckedBitrate
from sfu.bwe.feedback import FeedbackSummary


def test_frames_of_a_low_rate_layer() -> None:
    acked = AckedBitrate()
    # 20 frames/s of 3 packets of 200 bytes, one frame per feedback message: 96 kbit/s
    for i in range(20):
        first = 10.0 + 0.05 * i
        acked.on_feedback(FeedbackSummary((), 3, 0, 600, first, first + 0.002))
    assert acked.bitrate == pytest.approx(96_000, rel=0.05)
