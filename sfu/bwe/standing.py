"""A standing queue, and the path's jitter (ours, beside draft-ietf-rmcat-gcc-02 §5).

The trend (:mod:`sfu.bwe.delay`) sees a queue only while it grows. A drop-tail queue that filled
up (``tc tbf`` at its limit) is flat: trend zero, its overflow showing only as loss, which under
10 % the loss-based controller must not take for congestion (§6). So the one-way delay's level
is watched too: its floor per :data:`QUEUE_WINDOW` seconds against the lowest over
:data:`BASE_WINDOW`. A queue that did not drain within two windows stands.

Jitter raises that level too. A link that delays each packet at random but keeps their order
(a packet never overtakes the one ahead, as ``benchmarks/impair.py`` and real access links)
holds the packets behind a late one and releases them in a bunch: the denser the packets, the
more of them wait, so the floor rises with the packet rate — by 40 ms at 180 packets/s under
50 +- 50 ms, on a link with no queue at all. What tells the two apart is how the level varies
from one feedback message to the next: a full queue delays every message's packets alike,
jitter by tens of ms more or less each time. :attr:`StandingQueue.jitter` is that spread (the
messages' lowest delays between two quantiles, over :data:`JITTER_MESSAGES` messages); a queue
stands only above the limit *plus* it, and :mod:`sfu.bwe.capacity` asks the same of a busy one.

The floor is each message's lowest one-way delay over all its packets
(:attr:`FeedbackSummary.min_delay`), not a packet group's: under such jitter a group's delay
is its longest wait. Pure and clock-injected; the delays are on two clocks (the subscriber's
arrival minus our send time), so only their changes are used.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from operator import itemgetter

#: Seconds per floor: a queue that did not drain within one of these is not jitter.
QUEUE_WINDOW = 1.0
#: The base one-way delay is the lowest over this many seconds.
BASE_WINDOW = 30.0
#: The current floor this much (s) under the previous one: the queue is draining, not standing.
DRAINING = 0.005
#: A delay this far (s) from the base is the subscriber's clock jumping, not a queue.
CLOCK_JUMP = 3.0
#: The jitter is the spread of the lowest delays of this many messages (2 s of the client's 50
#: ms feedback) between these quantiles: the few messages of a link that just fell under the
#: estimate do not move it.
JITTER_MESSAGES = 40
JITTER_QUANTILES = (0.1, 0.9)
_LOW, _HIGH = JITTER_QUANTILES
_DELAY: Callable[[tuple[float, float]], float] = itemgetter(1)  # of a (time, delay) floor


class StandingQueue:
    """Feed :meth:`update` every feedback message; :meth:`standing` tells."""

    def __init__(
        self, *, queue_window: float = QUEUE_WINDOW, base_window: float = BASE_WINDOW
    ) -> None:
        if not 0 < queue_window <= base_window:
            raise ValueError("the windows must satisfy 0 < queue_window <= base_window")
        self._queue_window = queue_window
        self._base_window = base_window
        self._floors: deque[tuple[float, float]] = deque()  # (window opened at, lowest delay)
        self._recent: deque[float] = deque(maxlen=JITTER_MESSAGES)  # messages' lowest delays
        #: seconds: the spread of the last messages' lowest delays (JITTER_QUANTILES)
        self.jitter = 0.0

    def update(self, min_delay: float | None, now: float) -> None:
        """One message's lowest one-way delay (None: nothing arrived)."""
        if min_delay is None:
            return
        floors = self._floors
        if floors and abs(min_delay - floors[-1][1]) > CLOCK_JUMP:
            floors.clear()  # a new clock on the subscriber's side: start over
            self._recent.clear()
        recent = self._recent
        recent.append(min_delay)
        ordered = sorted(recent)
        last = len(ordered) - 1
        low, high = ordered[int(_LOW * last)], ordered[int(_HIGH * last)]
        self.jitter = high - low
        if not floors or now - floors[-1][0] >= self._queue_window:
            floors.append((now, min_delay))
        elif min_delay < floors[-1][1]:
            floors[-1] = (floors[-1][0], min_delay)
        while now - floors[0][0] > self._base_window:
            floors.popleft()

    def standing(self, limit: float) -> bool:
        """Whether a queue over ``limit`` seconds plus the jitter stood through the last
        two windows."""
        floors = self._floors
        if len(floors) < 3:  # no base yet
            return False
        base = min(map(_DELAY, floors))
        previous, current = floors[-2][1], floors[-1][1]
        level = min(previous, current) - base
        return level > limit + self.jitter and current >= previous - DRAINING
