"""When to probe the link, and how hard.

A delay-based estimator only learns that a link is slower than the sending rate; that it is
faster, it learns only by sending faster. Probe clusters (padding or RTX of recent packets paced
at a rate) test a rate before the allocator uses it (draft-ietf-rmcat-gcc-02 leaves this to the
implementation; the structure follows libwebrtc's ProbeController):

- **initial**: at start, clusters at 3x and 6x the initial estimate, then while each result
  reaches 70 % of the highest rate probed, again at twice the result (exponential probing);
- **requested**: the allocator wants a rate above the estimate (to move a track up a layer):
  probe somewhat above it, not while over-using or losing, at most every few seconds per level;
- **ALR**: while application-limited, every ``alr_interval`` seconds at twice the estimate.
"""

from __future__ import annotations

import math
from collections import deque

from sfu.bwe.feedback import ProbeCluster
from sfu.bwe.probe_result import ProbeResult

INITIAL_FACTORS = (3.0, 6.0)
#: Exponential probing goes on while a result reaches this fraction of the rate probed.
FURTHER_FRACTION = 0.7
FURTHER_FACTOR = 2.0
#: A requested probe goes this much above the requested rate, so a link that carries the probe
#: carries the rate with some margin.
REQUEST_OVERSHOOT = 1.15
#: Requested rates within this ratio of each other are one "level" for the rate limit.
LEVEL_RATIO = 1.1
ALR_FACTOR = 2.0


class ProbeController:
    """Decides the clusters; :class:`~sfu.bwe.probe_result.ProbeResultEstimator` measures them."""

    def __init__(
        self,
        *,
        max_bitrate: float,
        initial_probing: bool = True,
        initial_max: float = math.inf,
        alr_probing: bool = True,
        alr_interval: float = 5.0,
        request_interval: float = 2.5,
        duration: float = 0.05,
        min_packets: int = 5,
        timeout: float = 1.0,
    ) -> None:
        self._max = max_bitrate
        self._initial_probing = initial_probing
        #: exponential probing at start stops here (requested probes may go on, to the max)
        self._initial_max = initial_max
        self._alr_probing = alr_probing
        self._alr_interval = alr_interval
        self._request_interval = request_interval
        self._duration = duration
        self._min_packets = min_packets
        self._timeout = timeout
        self._started = False
        self._pending: deque[float] = deque()
        self._in_flight: dict[int, float] = {}  # cluster id -> handed out at
        self._next_id = 1
        self._last_probe: float | None = None  # when the last cluster was handed out
        self._requested: dict[int, float] = {}  # level -> last requested
        #: Exponential probing: the highest rate probed in the series, None when not probing.
        self._series_max: float | None = None

    def start(self, estimate: float, now: float) -> None:
        """At the first chance to send: the initial probes."""
        if self._started:
            return
        self._started = True
        if self._initial_probing:
            rates = [min(f * estimate, self._max) for f in INITIAL_FACTORS]
            rates = [r for r in dict.fromkeys(rates) if r > estimate]
            if rates:
                self._pending.extend(rates)
                self._series_max = max(rates)

    def request(self, bitrate: float, estimate: float, now: float, *, allowed: bool) -> bool:
        """The allocator wants ``bitrate``; True when a probe was scheduled for it."""
        if not allowed or bitrate <= estimate or estimate >= self._max or self.probing(now):
            return False
        level = round(math.log(bitrate) / math.log(LEVEL_RATIO))
        last = self._requested.get(level)
        if last is not None and now - last < self._request_interval:
            return False
        self._requested[level] = now
        self._pending.append(min(bitrate * REQUEST_OVERSHOOT, self._max))
        return True

    def on_tick(self, estimate: float, now: float, *, in_alr: bool, allowed: bool) -> None:
        """Periodic: ALR probing."""
        if not (self._alr_probing and in_alr and allowed) or estimate >= self._max:
            return
        if self.probing(now):
            return
        if self._last_probe is None or now - self._last_probe >= self._alr_interval:
            self._pending.append(min(ALR_FACTOR * estimate, self._max))
            self._last_probe = now  # a probe that is never sent is not retried at once

    def on_result(self, result: ProbeResult, now: float) -> None:
        self._in_flight.pop(result.cluster, None)
        series_max = self._series_max
        if series_max is None:
            return
        if result.bitrate >= FURTHER_FRACTION * series_max and not result.saturated:
            further = min(FURTHER_FACTOR * result.bitrate, self._max, self._initial_max)
            if further > series_max:
                self._pending.append(further)
                self._series_max = further
        elif not self._pending and not self._in_flight:
            self._series_max = None

    def stop(self) -> None:
        """Over-use or loss: drop the probes not yet sent and end exponential probing."""
        self._pending.clear()
        self._series_max = None

    def next(self, now: float) -> ProbeCluster | None:
        self._expire(now)
        if not self._pending:
            return None
        cluster = ProbeCluster(
            self._next_id, self._pending.popleft(), self._duration, self._min_packets
        )
        self._next_id += 1
        self._in_flight[cluster.cluster] = now
        self._last_probe = now
        return cluster

    def probing(self, now: float) -> bool:
        self._expire(now)
        return bool(self._pending or self._in_flight)

    def _expire(self, now: float) -> None:
        for cluster, at in list(self._in_flight.items()):
            if now - at > self._timeout:
                del self._in_flight[cluster]
        if self._series_max is not None and not self._pending and not self._in_flight:
            self._series_max = None  # the series' last result never came
