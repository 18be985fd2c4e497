"""Delay variation between packet groups, smoothed into a trend (draft-ietf-rmcat-gcc-02 §5.3).

The draft models the one-way delay gradient between consecutive packet groups:
``d(i) = t(i) - t(i-1) - (T(i) - T(i-1))`` (arrival delta minus send delta). It filters ``d`` with a
Kalman filter; like libwebrtc's goog_cc since 2017 we use a trendline filter instead: accumulate
``d``, smooth the accumulation exponentially, and take the least-squares slope of the smoothed
delay against arrival time over the last ``window`` groups. A positive slope means a queue is
building. The slope is scaled by the number of deltas seen (up to 60) and a gain, so it can be
compared against the overuse detector's threshold in milliseconds (§5.4).
"""

from __future__ import annotations

from collections import deque

from sfu.bwe.feedback import PacketGroup

#: An arrival delta this much larger or smaller than its send delta is not queueing but a clock
#: jump or a gap in the subscriber's feedback: start over.
MAX_DELAY_JUMP = 3.0


class InterGroupDeltas:
    """Send and arrival deltas between consecutive packet groups (draft §5.2 and §5.3).

    Groups arrive in send order, across feedback messages; a group older than the last one (a
    reordered or duplicate report) is dropped.
    """

    def __init__(self) -> None:
        self._previous: PacketGroup | None = None

    def push(self, group: PacketGroup) -> tuple[float, float] | None:
        """``(send_delta, arrival_delta)`` in seconds to the previous group, or None."""
        previous = self._previous
        if previous is not None and group.send_time <= previous.send_time:
            return None
        self._previous = group
        if previous is None:
            return None
        send_delta = group.send_time - previous.send_time
        arrival_delta = group.arrival_time - previous.arrival_time
        if abs(arrival_delta - send_delta) > MAX_DELAY_JUMP:
            return None
        return send_delta, arrival_delta


class TrendlineEstimator:
    """Slope of the smoothed accumulated inter-group delay over the last ``window`` groups."""

    def __init__(self, *, window: int = 20, smoothing: float = 0.9, gain: float = 4.0) -> None:
        self._window = window
        self._smoothing = smoothing
        self._gain = gain
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)
        self._first_arrival: float | None = None
        self._accumulated = 0.0
        self._smoothed = 0.0
        self.num_deltas = 0
        #: The last slope (ms of delay per ms of arrival time).
        self.trend = 0.0

    def update(self, send_delta: float, arrival_delta: float, arrival_time: float) -> float:
        """Add one delta (seconds); returns the modified trend in ms, for the detector."""
        self.num_deltas = min(self.num_deltas + 1, 1000)
        if self._first_arrival is None:
            self._first_arrival = arrival_time
        self._accumulated += (arrival_delta - send_delta) * 1000.0
        self._smoothed = (
            self._smoothing * self._smoothed + (1.0 - self._smoothing) * self._accumulated
        )
        self._samples.append(((arrival_time - self._first_arrival) * 1000.0, self._smoothed))
        if len(self._samples) == self._window:
            slope = _slope(self._samples)
            if slope is not None:
                self.trend = slope
        return self.modified_trend

    @property
    def modified_trend(self) -> float:
        """The trend scaled by the number of deltas (at most 60) and the gain (ms)."""
        return min(self.num_deltas, 60) * self.trend * self._gain


def _slope(points: deque[tuple[float, float]]) -> float | None:
    """The least-squares slope of ``points``; None when all x are equal."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in points)
    denominator = sum((x - mean_x) ** 2 for x, _ in points)
    if denominator == 0.0:
        return None
    return numerator / denominator
