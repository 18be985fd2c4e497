"""A sampled histogram of the SFU-internal forwarding latency: packet received -> copy sent.

Timing every packet would add a clock read per copy and a bucket search to the packet path.
Instead a :class:`~sfu.media.receiver.TrackReceiver` times one packet in :data:`SAMPLE_EVERY` (the
ones whose running count is a multiple of it): after it hands the packet to each down-track it
records the time since the datagram was read off the socket (``time.monotonic()`` in the socket
callback) — decryption, parsing, and the rewriting, SRTP protection and ``sendto`` of this copy
and of the copies to subscribers before it. Every other packet pays one ``&`` and a branch.
Time the datagram spent in the socket's receive buffer is not seen (uvloop gives no kernel
timestamp); a loop that falls behind shows in the end-to-end latency instead.

The histogram is plain integers; ``sfu.metrics`` exports it in Prometheus form at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left

#: One packet in this many (per receiver) is timed; a power of two, so the test is a mask.
SAMPLE_EVERY = 64
SAMPLE_MASK = SAMPLE_EVERY - 1

#: Upper bounds of the buckets, in seconds (Prometheus ``le``); one more bucket holds the rest.
BUCKETS: tuple[float, ...] = (
    0.000_005,
    0.000_010,
    0.000_020,
    0.000_035,
    0.000_050,
    0.000_075,
    0.000_100,
    0.000_200,
    0.000_500,
    0.001,
    0.002,
    0.005,
    0.010,
)


class Histogram:
    """Counts of observations per bucket, their sum and their number (no locking: one loop)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be strictly increasing")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float, weight: int = 1) -> None:
        """Record ``weight`` observations of ``seconds`` each."""
        self.counts[bisect_left(self.bounds, seconds)] += weight
        self.sum += seconds * weight
        self.count += weight

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` per bucket, ending with ``(inf, count)``."""
        result = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            result.append((bound, total))
        return result


#: The process-wide histogram every receiver records into.
FORWARDING = Histogram()
