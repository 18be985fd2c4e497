"""Over-use detector with an adaptive threshold (draft-ietf-rmcat-gcc-02 §5.4).

The delay trend ``m`` is compared against a threshold ``gamma`` that follows ``|m|`` — quickly
upwards (``k_u``), slowly downwards (``k_d``) — so the detector neither starves against a
concurrent loss-based flow (a fixed small threshold) nor sleeps through real queueing (a fixed
large one). Over-use is signalled only when ``m > gamma`` has lasted ``overusing_time`` and at
least two groups, and the trend is not falling; under-use when ``m < -gamma`` (a queue draining).
"""

from __future__ import annotations

from typing import Literal

#: The detector's signal (draft §5.4), also the estimator's reported state.
BandwidthUsage = Literal["normal", "overusing", "underusing"]

#: Threshold bounds (ms), draft §5.4.
MIN_THRESHOLD = 6.0
MAX_THRESHOLD = 600.0
#: A trend this far (ms) above the threshold is an outlier (a delay spike): the threshold does
#: not adapt to it.
MAX_ADAPT_OFFSET = 15.0
#: The threshold's update step covers at most this much time (ms), so a gap does not jump it.
MAX_UPDATE_STEP = 100.0


class OveruseDetector:
    """Turns the modified trend into normal / overusing / underusing."""

    def __init__(
        self,
        *,
        k_up: float = 0.01,
        k_down: float = 0.00018,
        overusing_time: float = 10.0,
        initial_threshold: float = 12.5,
    ) -> None:
        self._k_up = k_up
        self._k_down = k_down
        self._overusing_time = overusing_time
        #: gamma (ms).
        self.threshold = initial_threshold
        self.state: BandwidthUsage = "normal"
        self._time_over_using = -1.0
        self._overuse_count = 0
        self._previous_trend = 0.0
        self._last_update: float | None = None

    def detect(
        self, modified_trend: float, send_delta: float, num_deltas: int, arrival_time: float
    ) -> BandwidthUsage:
        """One group's verdict; ``send_delta`` and ``arrival_time`` in seconds."""
        if num_deltas < 2:
            return self.state
        if modified_trend > self.threshold:
            # The time over-using is counted in send time: half the first delta, as the
            # crossing happened somewhere inside it.
            if self._time_over_using < 0:
                self._time_over_using = send_delta * 500.0
            else:
                self._time_over_using += send_delta * 1000.0
            self._overuse_count += 1
            if (
                self._time_over_using > self._overusing_time
                and self._overuse_count > 1
                and modified_trend >= self._previous_trend
            ):
                self._time_over_using = 0.0
                self._overuse_count = 0
                self.state = "overusing"
        elif modified_trend < -self.threshold:
            self._time_over_using = -1.0
            self._overuse_count = 0
            self.state = "underusing"
        else:
            self._time_over_using = -1.0
            self._overuse_count = 0
            self.state = "normal"
        self._previous_trend = modified_trend
        self._adapt(modified_trend, arrival_time * 1000.0)
        return self.state

    def _adapt(self, modified_trend: float, now_ms: float) -> None:
        """gamma(i) = gamma(i-1) + dt * k * (|m| - gamma(i-1)), k_u above, k_d below."""
        if self._last_update is None:
            self._last_update = now_ms
        magnitude = abs(modified_trend)
        if magnitude > self.threshold + MAX_ADAPT_OFFSET:
            self._last_update = now_ms
            return
        k = self._k_down if magnitude < self.threshold else self._k_up
        step = min(max(now_ms - self._last_update, 0.0), MAX_UPDATE_STEP)
        self.threshold += k * (magnitude - self.threshold) * step
        self.threshold = min(max(self.threshold, MIN_THRESHOLD), MAX_THRESHOLD)
        self._last_update = now_ms
