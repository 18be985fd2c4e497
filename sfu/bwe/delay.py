"""Delay-based congestion detection (draft-ietf-rmcat-gcc-02 §5.2-§5.4) and its verdict.

Per packet group of a subscriber's transport-wide feedback: the inter-group delay variation,
smoothed into a trend (a trendline filter, as libwebrtc's goog_cc uses in place of the draft's
Kalman filter) whose rise is capped by the rise of the delay's floor (jitter moves single
groups, a queue all of them), compared against an adaptive threshold by the over-use detector.
A full drop-tail queue no longer grows, so no trend shows it: :mod:`sfu.bwe.standing` watches
the delay's level. It runs for every 5 ms group of every subscriber, so it is C
(``sfu/bwe/_delay.c``, whose opening comment describes each stage); the rate control acting on
its verdict (:mod:`sfu.bwe.aimd`) runs once per feedback message, in Python.
"""

from __future__ import annotations

from typing import Literal

from sfu.bwe._delay import MAX_THRESHOLD, MIN_THRESHOLD, DelayDetector

#: The detector's signal (draft §5.4), also the estimator's reported state.
BandwidthUsage = Literal["normal", "overusing", "underusing"]

__all__ = ["MAX_THRESHOLD", "MIN_THRESHOLD", "BandwidthUsage", "DelayDetector"]
