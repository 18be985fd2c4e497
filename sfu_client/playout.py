"""Adaptive playout delay for received video, as a browser's jitter buffer does.

aiortc hands a decoded frame over the moment it is complete. On a link with jitter and loss that
means every frame held behind a hole until its retransmission arrives (an RTT or two later) is a
visible freeze, and the frames held behind it then come out in a burst. Browsers instead render
each frame at a time derived from its RTP timestamp plus a target delay that covers the jitter
and the time a NACK repair takes (libwebrtc's ``VCMTiming``: target = jitter delay + decode +
render, the jitter delay adding a round trip when NACK is on). This module does the same for the
Python client, in two parts:

- :class:`PlayoutScheduler`, pure and clock-free: frame media time + arrival time -> render time;
- :class:`PlayoutTrack`, a ``MediaStreamTrack`` wrapping aiortc's receiving track whose
  ``recv()`` returns each decoded frame at its render time.

The mapping. For each frame, ``offset = arrival - media time``. The *base* is the smallest
offset seen over the last ``window`` frames: the transit of a frame that met no jitter and no
repair. A frame is rendered at ``media time + playout``, where ``playout - base`` is the current
playout delay (the latency this adds, reported as :attr:`PlayoutStats.delay`). The delay follows a
target: the ``quantile`` of the frames' offsets above the base over the window, plus a margin,
within ``[min_delay, max_delay]``. Frames that waited for a repair count in: the time repairs
take is learnt from them, where libwebrtc adds an RTT (a receive-only aiortc peer has none);
frames late by more than ``max_delay`` (an outage, not jitter) and those held behind them do not.

- it grows at once by what a late frame lacked (that frame has already stalled the picture;
  rendering the next ones on the new schedule adds no further gap and no burst after it);
- else it moves towards the target by at most ``grow_rate`` (up) or ``shrink_rate`` (down)
  seconds per second of media: playback runs a little slower or faster, no jump;
- it re-anchors (base = this frame, delay kept) when the timestamps no longer fit the clock: a
  frame that would wait longer than ``max_delay`` (the timestamps jumped ahead: a new stream, a
  source that restarted), or frames late by more than ``max_delay`` for ``reanchor_after``
  seconds in a row (they jumped back, or a source paused its clock). A long pause whose
  timestamps advanced with the clock needs nothing: the next frame fits the same mapping.

Frames later than ``drop_after`` past their render time are dropped when a newer frame is
already waiting (libwebrtc's renderer drops frames 500 ms old), so a burst after a long stall
catches up instead of replaying the past, and what an application does not read does not pile
up; the newest frame is always kept.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.frame import Frame
from av.packet import Packet

#: RTP timestamps are 32-bit (RFC 3550 §5.1) and wrap; deltas are read modulo 2**32.
TIMESTAMP_MODULUS = 1 << 32
#: A gap in the media counts as at most this much time for the delay's rate of change: a pause
#: is not a calm link.
MAX_STEP = 0.2


@dataclass(frozen=True, slots=True)
class PlayoutConfig:
    """How the playout delay adapts (seconds; rates in seconds of delay per second of media).

    The default bounds: the margin alone on a calm link (jitter-free frames), at most 0.5 s —
    enough for a retransmission that is itself lost and asked for again on a 100-200 ms round
    trip, and still a conversation's delay (ITU-T G.114 puts the limit for interactive use near
    400 ms one way). The target covers the latest frame of the last 200 (10 s at 20 fps): on a
    lossy link a repair whose retransmission was lost too (two round trips and a retry) comes
    every few seconds, and each one not covered is a visible stall. A lower ``quantile`` trades
    those stalls for latency; the frames held behind one hole all count, so it must stay well
    above the fraction of frames that wait for repairs.
    """

    min_delay: float = 0.0
    max_delay: float = 0.5
    margin: float = 0.015  # over the target: the event loop's and the decoder's own wobble
    quantile: float = 1.0
    window: int = 200  # frames
    grow_rate: float = 0.5
    shrink_rate: float = 0.05
    drop_after: float = 0.5
    reanchor_after: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_delay <= self.max_delay:
            raise ValueError("playout delay bounds must satisfy 0 <= min_delay <= max_delay")
        if not 0.0 < self.quantile <= 1.0 or self.window < 1:
            raise ValueError("playout quantile must be in (0, 1] and window at least 1 frame")
        if min(self.margin, self.grow_rate, self.shrink_rate, self.drop_after) < 0:
            raise ValueError("playout margin, rates and drop_after must not be negative")


@dataclass(frozen=True, slots=True)
class PlayoutStats:
    """What a scheduler did so far; ``delay`` and ``target`` in seconds."""

    delay: float  # the current playout delay above the fastest frames' transit
    target: float
    frames: int
    late: int  # frames that arrived after their render time
    dropped: int  # late frames skipped because a newer one was waiting
    reanchors: int


class PlayoutScheduler:
    """Render times for a stream of frames (see the module docstring). Pure: the caller passes
    arrival times and the current time; nothing here reads a clock."""

    def __init__(self, config: PlayoutConfig | None = None) -> None:
        self.config = config or PlayoutConfig()
        self.frames = self.late = self.dropped = self.reanchors = 0
        self._offsets: deque[float] = deque(maxlen=self.config.window)  # since the last anchor
        self._delay = self._target()
        self._base = 0.0
        self._playout: float | None = None  # None: not anchored
        self._media = 0.0  # unwrapped media time of the last frame
        self._last_timestamp: int | None = None
        self._late_since: float | None = None  # arrival of the first of a run of very late
        self._held = False  # frames are coming out from behind an outage

    @property
    def delay(self) -> float:
        """The current playout delay (s): how much later than the fastest frames' transit."""
        return self._delay if self._playout is None else self._playout - self._base

    def stats(self) -> PlayoutStats:
        return PlayoutStats(
            round(self.delay, 4), round(self._target(), 4),
            self.frames, self.late, self.dropped, self.reanchors,
        )  # fmt: skip

    def reset(self) -> None:
        """Forget the mapping (another stream follows); the delay reached is kept."""
        self._delay = self.delay
        self._playout = self._last_timestamp = self._late_since = None
        self._held = False
        self._offsets.clear()

    def schedule_timestamp(self, timestamp: int, clock_rate: int, arrival: float) -> float:
        """:meth:`schedule` for an RTP timestamp (or an aiortc pts, already unwrapped): read as a
        step from the previous frame's, modulo 2**32, so that a wrap is a small step."""
        if self._last_timestamp is None:
            media = 0.0
        else:
            step = (timestamp - self._last_timestamp) % TIMESTAMP_MODULUS
            if step >= TIMESTAMP_MODULUS // 2:
                step -= TIMESTAMP_MODULUS  # backwards (a reordered or restarted stream)
            media = self._media + step / clock_rate
        self._last_timestamp = timestamp
        return self.schedule(media, arrival)

    def schedule(self, media: float, arrival: float) -> float:
        """The render time of a frame of media time ``media`` (s) that arrived at ``arrival``."""
        config = self.config
        self.frames += 1
        offset = arrival - media
        step, self._media = media - self._media, media
        playout = self._playout
        if playout is None or media + playout - arrival > config.max_delay + config.margin:
            return self._anchor(media, offset)
        if offset - playout > config.max_delay:  # an outage, not jitter: shown, not learnt from
            self.late += 1
            self._held = True
            if self._late_since is None:
                self._late_since = arrival
            elif arrival - self._late_since >= config.reanchor_after:
                return self._anchor(media, offset)
            return media + playout
        self._late_since = None
        if self._held and offset > playout:  # held behind the outage's frame: no jitter either
            self.late += 1
            return media + playout
        self._held = False
        self._offsets.append(offset)
        self._base = base = min(self._offsets)
        target = base + self._target()
        if offset > playout:  # late: what it lacked is added at once, up to the target
            self.late += 1
            playout = max(playout, min(offset, target))
        elif step > 0:  # towards the target, at a bounded rate per second of media
            move = target - playout
            step = min(step, MAX_STEP)
            limit = step * (config.grow_rate if move > 0 else config.shrink_rate)
            playout += max(-limit, min(limit, move))
        playout = min(max(playout, base + config.min_delay), base + config.max_delay)
        self._playout = playout
        return media + playout

    def too_late(self, render_at: float, now: float) -> bool:
        """Whether a frame due at ``render_at`` is too old to show when a newer one waits."""
        return now - render_at > self.config.drop_after

    def _target(self) -> float:
        config = self.config
        if not self._offsets:
            return max(config.min_delay, min(config.margin, config.max_delay))
        if config.quantile == 1.0:
            above = max(self._offsets) - self._base
        else:
            ordered = sorted(self._offsets)
            above = ordered[min(len(ordered) - 1, int(config.quantile * len(ordered)))] - ordered[0]
        return min(max(above + config.margin, config.min_delay), config.max_delay)

    def _anchor(self, media: float, offset: float) -> float:
        """This frame is on time by definition; the delay reached so far is kept."""
        if self._playout is not None:
            self.reanchors += 1
            self._delay = self.delay
        self._offsets.clear()
        self._offsets.append(offset)
        self._base = offset
        self._playout = offset + self._delay
        self._late_since = None
        self._held = False
        return media + self._playout


class PlayoutTrack(MediaStreamTrack):
    """A received video track whose :meth:`recv` returns each decoded frame at its render time.

    A task takes the frames from ``source`` (aiortc's receiving track) as they are decoded — so
    that their arrival is timed when they reach the event loop, whether or not the application
    is reading — and :meth:`recv` waits until the head frame's render time. Frames without a
    timestamp are passed on at once. Ends when ``source`` ends.
    """

    def __init__(
        self,
        source: MediaStreamTrack,
        config: PlayoutConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.kind = source.kind
        self._id = source.id  # the id the remote description gave it
        self.source = source
        self.scheduler = PlayoutScheduler(config)
        self._clock = clock
        self._frames: deque[tuple[Frame | Packet[Any] | None, float]] = deque()  # None: ended
        self._arrived = asyncio.Event()
        self._pump = asyncio.create_task(self._take(), name="playout")

    @property
    def stats(self) -> PlayoutStats:
        return self.scheduler.stats()

    async def recv(self) -> Frame | Packet[Any]:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if not self._frames:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            frame, due = self._frames[0]
            if frame is None:
                self.stop()
                raise MediaStreamError
            now = self._clock()
            if due > now:
                await asyncio.sleep(due - now)  # then look again: drain() may have run
                continue
            if self._drop_stale(now):
                continue
            self._frames.popleft()
            return frame

    def drain(self) -> int:
        """Drop the frames taken and not read yet (another stream follows); returns how many."""
        ended = any(frame is None for frame, _ in self._frames)
        dropped = len(self._frames) - ended
        self._frames.clear()
        if ended:
            self._frames.append((None, 0.0))
        self.scheduler.reset()
        return dropped

    def stop(self) -> None:
        super().stop()
        self._pump.cancel()
        self._arrived.set()  # a recv() waiting for a frame raises MediaStreamError

    async def _take(self) -> None:
        while True:
            try:
                frame = await self.source.recv()
            except MediaStreamError:
                self._frames.append((None, 0.0))
                self._arrived.set()
                return
            now = self._clock()
            self._frames.append((frame, self._due(frame, now)))
            self._drop_stale(now)  # what nobody reads does not pile up
            self._arrived.set()

    def _drop_stale(self, now: float) -> int:
        """Drop the frames too late to show that a newer frame follows; returns how many."""
        frames, dropped = self._frames, 0
        while len(frames) > 1 and frames[1][0] is not None:
            frame, due = frames[0]
            if frame is None or not self.scheduler.too_late(due, now):
                break
            frames.popleft()
            dropped += 1
        self.scheduler.dropped += dropped
        return dropped

    def _due(self, frame: Frame | Packet[Any], arrival: float) -> float:
        pts, time_base = frame.pts, frame.time_base
        if pts is None or time_base is None:
            return arrival
        if time_base.numerator == 1:
            return self.scheduler.schedule_timestamp(pts, time_base.denominator, arrival)
        return self.scheduler.schedule(float(pts * Fraction(time_base)), arrival)
