"""A standing queue at the bottleneck, from the one-way delay's level.

The trendline (draft-ietf-rmcat-gcc-02 §5.3) sees a queue only while it grows. A drop-tail queue
that has filled up (``tc tbf`` at its latency limit) stops growing: the delay is flat, the trend
is zero, and the overflow shows only as loss — which, under 10 %, the loss-based controller must
not take for congestion (§6: it is the loss a link may always have). Between the two, a sender
slightly above the link would sit on a full queue for good. So the estimator also watches the
delay's level: the one-way delay (arrival minus send time; the clocks' offset cancels out) above
its minimum over ``base_window``, taken as the minimum over the last ``window`` — a queue that
never drained within it is standing, not jitter.
"""

from __future__ import annotations

from collections import deque

from sfu.bwe.feedback import PacketGroup

#: The newest window's lowest delay this much under the previous one's: the queue is draining.
DRAINING = 0.005
#: Arrivals this much (seconds) earlier than the newest window's start: a new clock.
CLOCK_RESTART = 1.0


class StandingQueue:
    def __init__(self, *, window: float = 1.0, base_window: float = 30.0) -> None:
        self._window = window
        self._base_window = base_window
        # (bucket start on the subscriber's clock, lowest delay in it), one bucket per window
        self._buckets: deque[tuple[float, float]] = deque()

    def on_group(self, group: PacketGroup) -> None:
        delay = group.arrival_time - group.send_time
        buckets = self._buckets
        if buckets and group.arrival_time < buckets[-1][0] - CLOCK_RESTART:
            buckets.clear()  # the subscriber's clock went back: start over
        if not buckets or group.arrival_time - buckets[-1][0] >= self._window:
            buckets.append((group.arrival_time, delay))
        elif delay < buckets[-1][1]:
            buckets[-1] = (buckets[-1][0], delay)
        while group.arrival_time - buckets[0][0] > self._base_window:
            buckets.popleft()

    def standing(self, limit: float) -> bool:
        """Whether the queue stayed over ``limit`` seconds through the last one or two windows
        and is not draining."""
        buckets = self._buckets
        if len(buckets) < 3:
            return False  # no base yet
        base = min(d for _, d in buckets)
        previous, current = buckets[-2][1], buckets[-1][1]
        return min(previous, current) - base > limit and current >= previous - DRAINING
