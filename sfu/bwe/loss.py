"""Loss-based control (draft-ietf-rmcat-gcc-02 §6, the sender side's loss controller).

Only the loss the subscriber's own transport-wide feedback reports counts: loss on the
publisher's leg never reaches these counters (mediasoup learned that echoing it back drags every
subscriber down). The fraction is taken over a short window (at least ``window`` seconds and
``min_packets`` packets) so one burst or one lost feedback message does not collapse the rate,
and only over packets sent after the target last went down: the loss of packets sent at a rate
already abandoned (a queue overflowing while the delay-based controller reacted) says nothing
about the new rate, and counting it again would cut the rate twice for one congestion event.

- under 2 %: grow 8 %/s (+1 kbit/s) from the lowest target of the last second;
- 2..10 %: hold — the loss a link always has (wireless, a lossy hop) is no congestion signal;
- over 10 %: ``rate = target * (1 - 0.5 * loss)``, at most once per 300 ms + RTT;
- over 20 % (a link far below what is sent): from the rate actually sent (the draft's A_s: the
  acknowledged rate over ``1 - loss``) when that is lower. An SFU
  forwarding less than its estimate (probes measured the link; the layers need less) would
  otherwise cut from a rate it never sent and stay above the link for several decreases while
  its loss goes on. Not below 20 %: a link's random loss fluctuates over 10 % now and then,
  and must not pull the estimate down to what happens to be sent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from operator import itemgetter

LOW_LOSS = 0.02
HIGH_LOSS = 0.10
SEVERE_LOSS = 0.20
INCREASE_FACTOR = 1.08
INCREASE_OFFSET = 1_000.0
#: The increase starts from the lowest target within this many seconds (so, 8 % per second).
INCREASE_HISTORY = 1.0
DECREASE_INTERVAL = 0.3
_TARGET: Callable[[tuple[float, float]], float] = itemgetter(1)  # of a (time, target) entry


class LossBasedControl:
    """The loss-based rate (bit/s). Growing, it follows the combined target (8 % above its
    lowest value of the last second), so it never runs far ahead of what was sent; held (2-10 %),
    it stays put even when the delay-based rate dips below it, so the link's own loss does not
    ratchet the target down each time the delay-based controller backs off."""

    def __init__(
        self,
        initial_bitrate: float,
        *,
        min_bitrate: float,
        max_bitrate: float,
        window: float = 0.5,
        min_packets: int = 20,
        max_age: float = 2.0,
    ) -> None:
        self._min = min_bitrate
        self._max = max_bitrate
        self._window = window
        self._min_packets = min_packets
        self._max_age = max_age
        self.estimate = min(max(initial_bitrate, min_bitrate), max_bitrate)
        self._reports: deque[tuple[float, int, int]] = deque()  # (now, received, lost)
        self._targets: deque[tuple[float, float]] = deque()  # (now, target)
        self._last_decrease: float | None = None
        #: The last windowed loss fraction, None until enough packets were reported.
        self.loss_fraction: float | None = None

    def on_report(self, received: int, lost: int, now: float, *, current: bool = True) -> None:
        """Counts from one feedback message; ``current``: its packets were sent after the target
        last went down (otherwise they are not counted)."""
        if received + lost == 0 or not current:
            return
        self._reports.append((now, received, lost))
        while self._reports and now - self._reports[0][0] > self._max_age:
            self._reports.popleft()
        self.loss_fraction = self._windowed_loss(now)

    def _windowed_loss(self, now: float) -> float | None:
        """Newest reports first, until both the window and the packet count are covered."""
        received = lost = 0
        for at, r, lo in reversed(self._reports):
            received += r
            lost += lo
            if now - at >= self._window and received + lost >= self._min_packets:
                break
        total = received + lost
        return lost / total if total >= self._min_packets else None

    def restart(self) -> None:
        """The target went down: loss counts afresh from packets sent from now on."""
        self._reports.clear()
        self.loss_fraction = None

    def note_target(self, target: float, now: float) -> None:
        """The combined target after each update (the base of the next increase)."""
        self._targets.append((now, target))
        while self._targets and now - self._targets[0][0] > INCREASE_HISTORY:
            self._targets.popleft()

    @property
    def may_rise(self) -> bool:
        """Whether a verified rate (a probe result) may lift this one: not while losing > 10 %."""
        return self.loss_fraction is None or self.loss_fraction <= HIGH_LOSS

    def update(self, now: float, rtt: float, target: float, acked: float | None = None) -> float:
        """Apply the current loss fraction; ``target`` is the combined target now, ``acked``
        the acknowledged bit/s (None: not known yet)."""
        loss = self.loss_fraction
        if loss is None:
            return self.estimate
        if loss < LOW_LOSS:
            base = min(map(_TARGET, self._targets), default=target)
            self.estimate = self._clamp(base * INCREASE_FACTOR + INCREASE_OFFSET)
        elif loss > HIGH_LOSS and (
            self._last_decrease is None or now - self._last_decrease >= DECREASE_INTERVAL + rtt
        ):
            # From the rate in use (the held rate may be above it: the delay-based one rules),
            # or from what was sent, when less.
            base = min(self.estimate, target)
            if acked is not None and SEVERE_LOSS < loss < 1.0:
                base = min(base, acked / (1.0 - loss))
            self.estimate = self._clamp(base * (1.0 - 0.5 * loss))
            self._last_decrease = now
            self.restart()
        return self.estimate

    def set_estimate(self, bitrate: float) -> None:
        """A verified rate: the next increase starts from it, not from the older targets."""
        self.estimate = self._clamp(bitrate)
        self._targets.clear()

    def _clamp(self, bitrate: float) -> float:
        return min(max(bitrate, self._min), self._max)
