"""The acknowledged bitrate: what the subscriber's feedback says actually arrived.

draft-ietf-rmcat-gcc-02 §5.5 decreases to a fraction of the *incoming* rate R_hat measured over
a 0.5..1 s window; with send-side estimation the sender learns it from the feedback: bytes
reported received over their arrival span (subscriber clock). Consecutive feedback messages
cover contiguous spans, so each message's span starts where the previous one ended; after a gap
(a lost feedback message) the message's own span is used, so missing bytes do not dilute it.
"""

from __future__ import annotations

from collections import deque

from sfu.bwe.feedback import FeedbackSummary

#: A gap between messages' arrival spans longer than this is a lost message (or a pause).
MAX_CONTIGUOUS_GAP = 0.2
#: An arrival earlier than the last one by more than this: the subscriber's clock restarted.
MAX_BACKWARDS = 1.0


class AckedBitrate:
    """Bytes received over the last ``window`` seconds of arrival time, as bit/s."""

    def __init__(self, *, window: float = 0.5, min_span: float = 0.15) -> None:
        self._window = window
        self._min_span = min_span
        self._spans: deque[tuple[float, float, int]] = deque()  # (start, end, bytes)
        self._last_arrival: float | None = None

    def on_feedback(self, feedback: FeedbackSummary) -> None:
        first, last = feedback.first_arrival, feedback.last_arrival
        if first is None or last is None or feedback.received_bytes <= 0 or last < first:
            return
        previous = self._last_arrival
        if previous is not None and last < previous - MAX_BACKWARDS:
            self._spans.clear()
            previous = None
        start = first
        if previous is not None and 0.0 <= first - previous <= MAX_CONTIGUOUS_GAP:
            start = previous
        self._spans.append((start, last, feedback.received_bytes))
        self._last_arrival = last if previous is None else max(previous, last)
        while self._spans and self._spans[0][1] < last - self._window:
            self._spans.popleft()

    @property
    def bitrate(self) -> float | None:
        """bit/s, or None until the window holds ``min_span`` seconds of arrivals."""
        span = sum(end - start for start, end, _ in self._spans)
        if span < self._min_span:
            return None
        return sum(size for _, _, size in self._spans) * 8 / span
