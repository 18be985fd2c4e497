"""What the load generator measures, as plain state machines (time is always an argument).

- :class:`ReceivedStream`: one RTP stream a load client receives — packets, bytes, losses (from
  sequence-number gaps), frames (a packet with the marker bit ends one), freezes (more than
  :data:`FREEZE_GAP` between two frames), and the size of its VP8 keyframes (which simulcast
  layer it carries, ``loadtest.simulcast``).
- :class:`LatencyBook`: when each recent packet was sent, keyed by its publisher and a hash of its
  payload, which the SFU forwards unchanged; a receiver in the same process looks it up.
- :class:`LargestSdp`: the largest session description one side of a connection sent.
- Percentiles, a quantile estimate from Prometheus histogram buckets, and a CPU meter.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import time
from collections.abc import Callable, Sequence

from sfu.media.seq import SequenceUnwrapper

#: A gap longer than this between two video frames counts as a freeze (seconds).
FREEZE_GAP = 0.5


class ReceivedStream:
    """One SSRC arriving at one load client."""

    __slots__ = (
        "_unwrapper",
        "bytes",
        "first_frame_at",
        "first_seq",
        "frames",
        "freezes",
        "frozen",
        "keyframes",
        "kind",
        "last_frame_at",
        "longest_gap",
        "max_seq",
        "packets",
        "publisher_id",
        "size",
        "sizes",
        "started_at",
        "track_id",
    )

    def __init__(self, now: float) -> None:
        self.started_at = now
        self.kind: str | None = None  # known once the stream is matched to a remote track
        self.publisher_id: str | None = None
        self.track_id: str | None = None
        self.packets = 0
        self.bytes = 0
        self.first_seq = -1
        self.max_seq = -1
        self.frames = 0
        self.first_frame_at: float | None = None
        self.last_frame_at: float | None = None
        self.freezes = 0
        self.frozen = 0.0  # seconds spent in gaps longer than FREEZE_GAP
        self.longest_gap = 0.0
        self.keyframes = 0
        self.size: tuple[int, int] | None = None  # (width, height) of the last keyframe
        #: (time, width, height) of the first keyframe and of every one of another size
        self.sizes: list[tuple[float, int, int]] = []
        self._unwrapper = SequenceUnwrapper()

    def on_packet(self, seq: int, marker: bool, size: int, now: float) -> None:
        ext = self._unwrapper.unwrap(seq)
        if self.packets == 0:
            self.first_seq = self.max_seq = ext
        elif ext > self.max_seq:
            self.max_seq = ext
        self.packets += 1
        self.bytes += size
        if marker:
            self._on_frame(now)

    def on_keyframe(self, width: int, height: int, now: float) -> None:
        """A packet started a keyframe of this size: the layer from this frame on."""
        self.keyframes += 1
        if self.size != (width, height):
            self.size = (width, height)
            self.sizes.append((now, width, height))

    def _on_frame(self, now: float) -> None:
        last = self.last_frame_at
        if last is None:
            self.first_frame_at = now
        else:
            self._gap(now - last)
        self.frames += 1
        self.last_frame_at = now

    def _gap(self, gap: float) -> None:
        self.longest_gap = max(self.longest_gap, gap)
        if gap > FREEZE_GAP:
            self.freezes += 1
            self.frozen += gap

    def close(self, now: float) -> None:
        """End of measurement: a stream silent for longer than FREEZE_GAP is frozen until now."""
        if self.last_frame_at is not None and now - self.last_frame_at > FREEZE_GAP:
            self._gap(now - self.last_frame_at)
            self.last_frame_at = now

    @property
    def expected(self) -> int:
        """Packets the sender numbered between the first and the highest received."""
        return self.max_seq - self.first_seq + 1 if self.packets else 0

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.packets)


def vp8_descriptor_size(data: bytes, start: int) -> int:
    """Octets of the VP8 payload descriptor at ``data[start]`` (RFC 7741 §4.2), which a simulcast
    down-track rewrites; IndexError when the packet ends inside it."""
    b0 = data[start]
    if not b0 & 0x80:  # X: no extension byte
        return 1
    x = data[start + 1]
    size = 2
    if x & 0x80:  # I: picture id, 15 bits when M is set
        size += 2 if data[start + 2] & 0x80 else 1
    if x & 0x40:  # L: TL0PICIDX
        size += 1
    if x & 0x30:  # T/K: one byte for both
        size += 1
    return size


def m_lines(sdp: str) -> int:
    """Media sections (``m=`` lines) of an SDP (RFC 8866 §5.14)."""
    return sdp.count("\nm=") + sdp.startswith("m=")


class LargestSdp:
    """The largest SDP seen (characters) and its m-lines, and how many were seen."""

    __slots__ = ("chars", "count", "m_lines")

    def __init__(self) -> None:
        self.chars = 0
        self.m_lines = 0
        self.count = 0

    def note(self, sdp: str) -> None:
        self.count += 1
        if len(sdp) > self.chars:
            self.chars = len(sdp)
            self.m_lines = m_lines(sdp)


class LatencyBook:
    """Send times of the packets sent in the last ``keep`` to ``2 * keep`` seconds.

    Two generations of dictionaries: :meth:`rotate` drops the older one, so forgetting costs
    nothing per packet. A payload sent again (a looped clip) keeps its latest send time.
    """

    def __init__(self, keep: float = 5.0) -> None:
        self.keep = keep
        self._current: dict[tuple[str, int], float] = {}
        self._previous: dict[tuple[str, int], float] = {}
        self._rotated_at: float | None = None

    def sent(self, publisher_id: str, payload_hash: int, at: float) -> None:
        self._current[(publisher_id, payload_hash)] = at

    def sent_at(self, publisher_id: str, payload_hash: int) -> float | None:
        key = (publisher_id, payload_hash)
        found = self._current.get(key)
        return found if found is not None else self._previous.get(key)

    def rotate(self, now: float) -> None:
        if self._rotated_at is None:
            self._rotated_at = now
        elif now - self._rotated_at >= self.keep:
            self._previous, self._current = self._current, {}
            self._rotated_at = now

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation; None for no values."""
    return percentiles(values, (q,))[0]


def percentiles(values: Sequence[float], qs: Sequence[float]) -> list[float | None]:
    """:func:`percentile` for each of ``qs``, sorting once."""
    ordered = sorted(values)
    return [_percentile_of_sorted(ordered, q) if ordered else None for q in qs]


def _percentile_of_sorted(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> dict[str, float]:
    """count, min, p50, p95, p99, max and mean of ``values`` (times ``scale``), for reports."""
    if not values:
        return {"count": 0}
    result: dict[str, float] = {"count": len(values)}
    ordered = sorted(values)
    result["min"] = round(ordered[0] * scale, digits)
    for q in (50, 95, 99):
        result[f"p{q}"] = round(_percentile_of_sorted(ordered, q) * scale, digits)
    result["max"] = round(ordered[-1] * scale, digits)
    result["mean"] = round(sum(ordered) / len(ordered) * scale, digits)
    return result


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Estimate the ``q`` quantile (0-1) from cumulative ``(upper bound, count)`` buckets.

    As Prometheus's ``histogram_quantile``: linear within the bucket the rank falls in; the lower
    bound of the first bucket is 0; a rank in the ``+Inf`` bucket answers the last finite bound.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


class CpuMeter:
    """CPU time of this process (every thread) as a percentage of one core, between calls."""

    def __init__(
        self,
        cpu: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cpu = cpu or _process_cpu_seconds
        self._clock = clock
        self._last = (self._clock(), self._cpu())
        self.first = self._last

    def percent(self) -> float:
        """Since the previous call."""
        now = (self._clock(), self._cpu())
        (t0, c0), self._last = self._last, now
        return 100.0 * (now[1] - c0) / (now[0] - t0) if now[0] > t0 else 0.0

    def total_seconds(self) -> float:
        return self._cpu() - self.first[1]


def _process_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class MachineCpu:
    """CPU use of the whole machine (every process), in percent of one core, from /proc/stat.

    Other processes on the machine steal CPU from both the server and the generator; this shows
    when they did. None where /proc/stat does not exist.
    """

    def __init__(self, path: str = "/proc/stat") -> None:
        self._path = path
        self._cpus = os.cpu_count() or 1
        self._last = self._read()

    def _read(self) -> tuple[float, float] | None:
        try:
            with open(self._path) as stat:
                fields = [float(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        return sum(fields[:8]), idle  # guest time is already counted in user

    def percent(self) -> float | None:
        """Busy time since the previous call, in percent of one core (up to 100 x cores)."""
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[0] <= last[0]:
            return None
        total, idle = now[0] - last[0], now[1] - last[1]
        return 100.0 * self._cpus * (total - idle) / total


class LoopLag:
    """How late the event loop wakes a task that sleeps ``period``: a blocked or starved loop.

    A load generator whose loop runs late delays its own sending and receiving, and its latency
    numbers are then its own. :meth:`take` returns the worst lag since the previous call.
    """

    def __init__(self, period: float = 0.02) -> None:
        self.period = period
        self._worst = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.period)
            lag = time.perf_counter() - before - self.period
            if lag > self._worst:
                self._worst = lag

    def take(self) -> float:
        worst, self._worst = self._worst, 0.0
        return worst

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class GcPauses:
    """Time spent in Python's cyclic garbage collector (``gc.callbacks``), per interval."""

    def __init__(self) -> None:
        self._started: float | None = None
        self.total = 0.0
        self.worst = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            pause = time.perf_counter() - self._started
            self._started = None
            self.total += pause
            self.worst = max(self.worst, pause)

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def take(self) -> tuple[float, float]:
        """(seconds in the collector, longest pause) since the previous call."""
        result = (self.total, self.worst)
        self.total = self.worst = 0.0
        return result

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
