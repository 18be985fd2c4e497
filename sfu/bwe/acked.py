"""The acknowledged bitrate: what the subscriber's feedback says actually arrived.

draft-ietf-rmcat-gcc-02 §5.5 decreases to a fraction of the *incoming* rate R_hat measured over
a 0.5..1 s window; with send-side estimation the sender learns it from the feedback: bytes
reported received over their arrival span (subscriber clock). Consecutive feedback messages
cover contiguous spans, so each message's span starts where the previous one ended; after a gap
much longer than the message's own packet spacing (a lost feedback message), it starts one
packet spacing before its first arrival, so the missing message's bytes do not dilute the rate.
"""

from __future__ import annotations

from collections import deque

from sfu.bwe.feedback import FeedbackSummary

#: A gap between messages' arrival spans longer than this many times the message's average
#: packet spacing (plus ``GAP_SLACK`` seconds), and than ``MIN_GAP``, is a lost message or a
#: pause. Video comes in frames: its packets arrive a millisecond apart, its frames 33-100 ms
#: apart, so the gap before a message's first frame is no sign of a lost message below that.
MAX_GAP_SPACINGS = 3.0
GAP_SLACK = 0.005
MIN_GAP = 0.1
#: An arrival earlier than the last one by more than this: the subscriber's clock restarted.
MAX_BACKWARDS = 1.0


class AckedBitrate:
    """Bytes received over the last ``window`` seconds of arrival time, as bit/s."""

    def __init__(self, *, window: float = 0.5, min_span: float = 0.15) -> None:
        self._window = window
        self._min_span = min_span
        self._spans: deque[tuple[float, float, int]] = deque()  # (start, end, bytes)
        self._span = 0.0  # the spans' seconds and bytes, kept as they come and go
        self._bytes = 0
        self._last_arrival: float | None = None

    def on_feedback(self, feedback: FeedbackSummary) -> None:
        first, last = feedback.first_arrival, feedback.last_arrival
        if first is None or last is None or feedback.received_bytes <= 0 or last < first:
            return
        previous = self._last_arrival
        if previous is not None and last < previous - MAX_BACKWARDS:
            self._spans.clear()
            self._span, self._bytes = 0.0, 0
            previous = None
        spacing = (last - first) / (feedback.received - 1) if feedback.received > 1 else 0.0
        if previous is not None and 0.0 <= first - previous <= max(
            MAX_GAP_SPACINGS * spacing + GAP_SLACK, MIN_GAP
        ):
            start = previous
        else:
            start = first - spacing
        spans = self._spans
        spans.append((start, last, feedback.received_bytes))
        self._span += last - start
        self._bytes += feedback.received_bytes
        self._last_arrival = last if previous is None else max(previous, last)
        while spans and spans[0][1] < last - self._window:
            old_start, old_end, old_bytes = spans.popleft()
            self._span -= old_end - old_start
            self._bytes -= old_bytes
        if not spans:
            self._span, self._bytes = 0.0, 0

    @property
    def bitrate(self) -> float | None:
        """bit/s, or None until the window holds ``min_span`` seconds of arrivals."""
        span = self._span
        if span < self._min_span:
            return None
        return self._bytes * 8 / span
