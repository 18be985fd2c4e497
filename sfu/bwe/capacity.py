"""A link that fell far below the estimate, measured on a queue that never idled (ours, not GCC's).

GCC's signals are slow for a link that falls from megabits to a few hundred kilobits: the
delay-based detector (:mod:`sfu.bwe.delay`) smooths the delay and fits its trend over the last
20 packet groups, and a drop-tail queue that filled at once is a step, not a trend — in the
shaped-link step to 400 kbit/s the first delayed group was reported 0.2 s after the step and
over-use 0.42 s after it; the loss-based controller needs a 0.5 s window over 10 % loss. All that
while the layer left keeps filling the bottleneck and the subscriber's picture is frozen.

The feedback says more than that at once. When every packet a message reports waited in a queue
— its lowest one-way delay over the connection's base by more than :data:`BUSY_QUEUE` and than
the spacing of its arrivals — the link never idled while they arrived, so their dispersion
(the bytes after the first arrival over the span from the first arrival to the last) is what
it carries now: the packet-train measurement a saturated probe cluster makes, on media. Two
such messages in a row delivering less than :data:`DROP_RATIO` of the target mean the link fell
under the estimate: the estimate goes to the measured rate at once.

The span is each message's own, never the gap before it: a receiver that stalls (a busy
process, a radio waking up) and then reads its queue in one go shows a long queue too, but its
packets arrive back to back — fast, not slow — and it is no fall of the link.

A jittery link that keeps the packets' order holds the ones behind a late packet and releases
them in a bunch: every packet of a message may have waited 30 ms and more, and a message's
dispersion then says nothing of the link (in a simulation of 50 +- 50 ms jitter on a 10 Mbit/s
link the rule "measured" 0.2-2 Mbit/s eight times in 30 s). There the waits vary from message to
message by tens of ms, where a full queue's do not: the queue must exceed the busy queue by the
path's jitter as :class:`sfu.bwe.standing.StandingQueue` measures it (as of the messages before
the run, which the fall's own messages do not move).

A keyframe burst into a link that carries the estimate builds a queue too, but drains it at the
estimate: no fall. A link whose queue someone else's download keeps full delivers our share,
which is then the estimate (GCC's delay-based controller backs off there as well).

Pure and clock-injected: ``now`` is an argument; the one-way delays are on two clocks (the
subscriber's arrival minus our send time), so only their changes are used.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from operator import itemgetter

from sfu.bwe.feedback import FeedbackSummary

#: Seconds of queueing every packet of a message must show for the link to count as busy.
BUSY_QUEUE = 0.03
#: A busy link delivering under this fraction of the target fell below the estimate. GCC's
#: sawtooth keeps the estimate within ~1.2x of a link it has measured (0.83 of it delivered);
#: a probe that fitted in a shaper's token bucket lifts it to ~1.7x (0.6): that one falls too.
DROP_RATIO = 0.7
#: Busy messages in a row (two packets at least each) that make a measurement.
MESSAGES = 2
_DELAY: Callable[[tuple[float, float]], float] = itemgetter(1)  # of a (time, delay) bucket
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
        self._run: list[tuple[float, int]] = []  # busy messages: (arrival span, bytes over it)
        #: The queue (s) the last message's packets waited in at least; None before any.
        self.queue: float | None = None

    def update(
        self, feedback: FeedbackSummary, target: float, now: float, *, jitter: float = 0.0
    ) -> float | None:
        """One message; ``target``: the estimate before it; ``jitter``: how much the queue
        varies from message to message on this path (s, :class:`sfu.bwe.standing.StandingQueue`).
        The measured rate (bit/s) when the link fell, else None."""
        first, last, received = feedback.first_arrival, feedback.last_arrival, feedback.received
        min_delay = feedback.min_delay
        if min_delay is None or first is None or last is None or received < 2 or last <= first:
            return None  # no span: no measurement, and no evidence against the run
        queue = self.queue = min_delay - self._base(min_delay, now)
        seconds = last - first
        if queue < self._busy_queue + jitter or queue < seconds / (received - 1):
            self._run.clear()
            return None
        run = self._run
        run.append((seconds, feedback.received_bytes - feedback.first_size))
        del run[:-MESSAGES]
        if len(run) < MESSAGES:
            return None
        rate = sum(b for _, b in run) * 8 / sum(s for s, _ in run)
        if rate >= self._drop_ratio * target:
            return None
        run.clear()
        return rate

    def _base(self, delay: float, now: float) -> float:
        """The lowest delay over the base window, this one included."""
        buckets = self._buckets
        if buckets:
            base = min(map(_DELAY, buckets))
            if not base - CLOCK_JUMP < delay < base + CLOCK_JUMP:
                buckets.clear()  # a new clock on the subscriber's side: start over
        if not buckets or now - buckets[-1][0] >= BUCKET:
            buckets.append((now, delay))
        elif delay < buckets[-1][1]:
            buckets[-1] = (buckets[-1][0], delay)
        while now - buckets[0][0] > self._base_window:
            buckets.popleft()
        return min(map(_DELAY, buckets))
