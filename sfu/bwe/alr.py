"""Application-limited region (ALR) detection.

A sender that uses much less than its estimate (the subscriber's layers need less than the
link could carry) gets no congestion signal, so its delay-based estimate would only ever grow:
Pion's GCC reached 4 Mbit/s for a 784 kbit/s stream that way. The estimator uses this detector to
stop trusting growth it has not verified, and the probe controller to test the link now and then
(after libwebrtc's AlrDetector, which starts ALR under 65 % of the estimate and ends it above
80 %). ALR starts here under 70 %: the delay-based estimate of an application-limited sender is
capped at 1.5 x its acknowledged rate + 10 kbit/s, where it sends about 65 % of the estimate —
with libwebrtc's 65 % a capped sender would hover at the edge and rarely count as limited.
"""

from __future__ import annotations


class AlrDetector:
    """Fed the egress's byte counter on each tick; ``in_alr`` after ``start_after`` seconds of
    sending under ``start_ratio`` of the estimate, until one interval above ``stop_ratio``."""

    def __init__(
        self, *, start_ratio: float = 0.7, stop_ratio: float = 0.8, start_after: float = 0.5
    ) -> None:
        self._start_ratio = start_ratio
        self._stop_ratio = stop_ratio
        self._start_after = start_after
        self._last: tuple[float, int] | None = None
        self._below_since: float | None = None
        self.in_alr = False
        #: When the current ALR period started (None outside ALR).
        self.started_at: float | None = None
        #: The send rate over the last interval (bit/s), None before two samples.
        self.send_rate: float | None = None

    def on_sent(self, bytes_sent_total: int, now: float, estimate: float) -> None:
        last = self._last
        self._last = (now, bytes_sent_total)
        if last is None or now <= last[0] or bytes_sent_total < last[1]:
            return  # first sample, a clock glitch, or the counter restarted
        elapsed = now - last[0]
        rate = (bytes_sent_total - last[1]) * 8 / elapsed
        self.send_rate = rate
        if rate < self._start_ratio * estimate:
            if self._below_since is None:
                self._below_since = last[0]
            if not self.in_alr and now - self._below_since >= self._start_after:
                self.in_alr = True
                self.started_at = now
        else:
            self._below_since = None
            if rate > self._stop_ratio * estimate:
                self.in_alr = False
                self.started_at = None
