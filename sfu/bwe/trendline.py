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
        self._samples: deque[tuple[float, float]] = deque()
        self._fit = _RunningFit()
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
        samples, fit = self._samples, self._fit
        point = ((arrival_time - self._first_arrival) * 1000.0, self._smoothed)
        samples.append(point)
        fit.add(*point)
        if len(samples) > self._window:
            fit.remove(*samples.popleft())
        if len(samples) == self._window:
            slope = fit.slope(samples)
            if slope is not None:
                self.trend = slope
        return self.modified_trend

    @property
    def modified_trend(self) -> float:
        """The trend scaled by the number of deltas (at most 60) and the gain (ms)."""
        return min(self.num_deltas, 60) * self.trend * self._gain


class _RunningFit:
    """The sums of a least-squares line over a sliding window, updated per point: the slope
    costs a few operations per packet group, not a pass over the window (it ran for every
    group of every subscriber). x is taken from an origin moved to the window's oldest point
    every RESET points, so the sums stay small and no precision is lost to cancellation."""

    RESET = 1000

    __slots__ = ("_added", "_origin", "n", "sx", "sxx", "sxy", "sy")

    def __init__(self) -> None:
        self._origin: float | None = None
        self._added = 0
        self.n = 0
        self.sx = self.sy = self.sxx = self.sxy = 0.0

    def add(self, x: float, y: float) -> None:
        if self._origin is None:
            self._origin = x
        x -= self._origin
        self.n += 1
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.sxy += x * y
        self._added += 1

    def remove(self, x: float, y: float) -> None:
        assert self._origin is not None
        x -= self._origin
        self.n -= 1
        self.sx -= x
        self.sy -= y
        self.sxx -= x * x
        self.sxy -= x * y

    def slope(self, points: deque[tuple[float, float]]) -> float | None:
        """The slope over ``points`` (the window these sums hold); None when all x are equal."""
        if self._added >= self.RESET:  # re-origin at the oldest point, sums afresh
            self._origin, self._added = None, 0
            self.n = 0
            self.sx = self.sy = self.sxx = self.sxy = 0.0
            for x, y in points:
                self.add(x, y)
        n = self.n
        denominator = n * self.sxx - self.sx * self.sx
        if n < 2 or denominator <= 1e-9 * n * self.sxx:
            return None
        return (n * self.sxy - self.sx * self.sy) / denominator
