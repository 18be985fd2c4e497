"""A link that fell far below the estimate, measured on a queue that never idled (ours, not GCC's).

GCC's signals are slow for a link that falls from megabits to a few hundred kilobits: the
delay-based detector (:mod:`sfu.bwe.delay`) smooths the delay and fits its trend over the last
20 packet groups, and a drop-tail queue that filled at once is a step, not a trend — in the
shaped-link step to 400 kbit/s the first delayed group was reported 0.2 s after the step and
over-use 0.42 s after it; the loss-based controller needs a 0.5 s window over 10 % loss. All that
while the layer left keeps filling the bottleneck and the subscriber's picture is frozen.

The feedback says more than that at once. When every packet a message reports waited in a queue
— its lowest one-way delay over the connection's base by more than :data:`BUSY_QUEUE` and than
the message's packet spacing — the link never idled over the message's arrival span, so the
bytes that arrived over that span are what it carries now: the delivery rate BBR samples, or a
saturated probe cluster's receive rate. Two such messages in a row delivering less than
:data:`DROP_RATIO` of the target mean the link fell under the estimate: the estimate goes to the
measured rate at once.

A keyframe burst into a link that carries the estimate builds a queue too, but drains it at the
estimate: no fall. A link whose queue someone else's download keeps full delivers our share,
which is then the estimate (GCC's delay-based controller backs off there as well).

Pure and clock-injected: ``now`` is an argument; the one-way delays are on two clocks (the
subscriber's arrival minus our send time), so only their changes are used.
"""

from __future__ import annotations

from collections import deque

#: Seconds of queueing every packet of a message must show for the link to count as busy.
BUSY_QUEUE = 0.03
#: A busy link delivering under this fraction of the target fell below the estimate.
DROP_RATIO = 0.5
#: Busy messages in a row that make a measurement, and the fewest packets they must hold.
MESSAGES = 2
MIN_PACKETS = 3
#: The base one-way delay is the lowest over this many seconds, kept per BUCKET seconds.
BASE_WINDOW = 10.0
BUCKET = 1.0
#: A delay this far (s) above or below the base is the subscriber's clock jumping, not a queue.
CLOCK_JUMP = 3.0


class CapacityDrop:
    """Feed :meth:`update` every feedback message; it returns a measured rate (bit/s) when the
    link fell far below the target."""

    def __init__(
        self,
        *,
        busy_queue: float = BUSY_QUEUE,
        drop_ratio: float = DROP_RATIO,
        base_window: float = BASE_WINDOW,
    ) -> None:
        self._busy_queue = busy_queue
        self._drop_ratio = drop_ratio
        self._base_window = base_window
        self._buckets: deque[tuple[float, float]] = deque()  # (opened at, lowest delay)
        self._run: list[tuple[float, int, int]] = []  # busy messages: (seconds, bytes, packets)
        #: The queue (s) the last message's packets waited in at least; None before any.
        self.queue: float | None = None

    def update(
        self,
        min_delay: float | None,
        span: tuple[float, float, int] | None,
        received: int,
        target: float,
        now: float,
    ) -> float | None:
        """One message: its lowest one-way delay, its arrival span as (start, end, bytes) (see
        :meth:`sfu.bwe.acked.AckedBitrate.on_feedback`) and its packets received; ``target``:
        the estimate before it. The measured rate when the link fell, else None."""
        if min_delay is None or span is None or received <= 0:
            return None  # nothing arrived: no measurement, and no evidence against the run
        queue = self.queue = min_delay - self._base(min_delay, now)
        start, end, size = span
        seconds = end - start
        if seconds <= 0 or queue < self._busy_queue or queue < seconds / received:
            self._run.clear()
            return None
        run = self._run
        run.append((seconds, size, received))
        del run[:-MESSAGES]
        if len(run) < MESSAGES or sum(p for _, _, p in run) < MIN_PACKETS:
            return None
        rate = sum(b for _, b, _ in run) * 8 / sum(s for s, _, _ in run)
        if rate >= self._drop_ratio * target:
            return None
        run.clear()
        return rate

    def _base(self, delay: float, now: float) -> float:
        """The lowest delay over the base window, this one included."""
        buckets = self._buckets
        if buckets:
            base = min(d for _, d in buckets)
            if not base - CLOCK_JUMP < delay < base + CLOCK_JUMP:
                buckets.clear()  # a new clock on the subscriber's side: start over
        if not buckets or now - buckets[-1][0] >= BUCKET:
            buckets.append((now, delay))
        elif delay < buckets[-1][1]:
            buckets[-1] = (buckets[-1][0], delay)
        while now - buckets[0][0] > self._base_window:
            buckets.popleft()
        return min(d for _, d in buckets)
