"""Giving memory back to the operating system after participants leave.

A participant's objects are not freed when it leaves: aiortc's and our connection objects
reference each other in cycles (transports and their owners, event handlers, futures, tracebacks),
which only CPython's full collection frees. They lived long enough to reach its oldest generation,
and a full collection runs only after tens of thousands of new objects survived the younger ones:
about 130 departures, 0.23 MB each, waited as garbage, and once freed their memory lay scattered
between live objects, pymalloc's arenas and glibc's heap kept mapped at that high-water mark.
Measured with join/publish/leave cycles beside one participant that stays
(tests/e2e/test_leaks.py): RSS 98 -> 140 MB over 400 cycles, live objects flat.

So after a departure the service collects (:func:`gc.collect`) and then trims glibc's heap
(``malloc_trim(0)``), a little later (:data:`RECLAIM_DELAY`: leaves come in waves, and the
leaver's connection closes in the meantime) and, while departures go on, at most every
:data:`RECLAIM_INTERVAL`, or less often when a collection is dear: its pauses take at most
1 / :data:`PAUSE_SHARE` of the event loop (but one runs at least every :data:`MAX_INTERVAL`, as
the pause grows with the garbage it frees). What the process made before it served anyone
(modules, classes, configuration) is frozen out of collections (:func:`freeze_startup`), so a
collection walks only the participants' objects: 1-2 ms with two in the room, where walking
everything took 26 ms (freeing ten leavers' garbage adds a few). Trimming is glibc's (musl,
macOS: collecting only). Two things held a leaver's memory beyond that and now let go of it at
close: a pending keyframe-request timer (its publisher's whole connection, up to a second:
sfu/media/layer.py) and the C egress's transport-cc send records (192 KiB each).
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable

RECLAIM_DELAY = 0.5
RECLAIM_INTERVAL = 0.5
PAUSE_SHARE = 50  # a pause of the loop at most every 50 times as long as the last one, ...
MAX_INTERVAL = 2.0  # ... but not less often: the pause grows with the garbage it frees


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    function = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def freeze_startup() -> None:
    """Leave the objects that exist now out of every later collection (:func:`gc.freeze`).

    For a server about to accept its first participant: its objects live as long as the
    process, and a full collection need not walk them again each time someone leaves. Objects
    frozen are never collected, so this must not run while participants are connected."""
    gc.collect()
    gc.freeze()


class MemoryReclaimer:
    """Collects cycles and trims the heap after departures, rate-limited (``collect``,
    ``trim``, ``clock`` and the times: for tests)."""

    def __init__(
        self,
        collect: Callable[[], int] = gc.collect,
        trim: Callable[[int], int] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        delay: float = RECLAIM_DELAY,
        interval: float = RECLAIM_INTERVAL,
    ) -> None:
        self._collect = collect
        self._trim = trim if trim is not None else _malloc_trim()
        self._clock = clock
        self._delay, self._interval = delay, interval
        self._gap = interval  # from the end of one reclaim to the start of the next, at least
        self._last = -interval
        self._pending: asyncio.TimerHandle | None = None
        # the timer runs in a context of its own, made once: not a copy of the leaver's (its
        # log bindings), which the pending timer would keep alive after it left
        self._context = contextvars.Context()
        self.runs = 0
        self.last_pause = 0.0

    def departed(self) -> None:
        """A participant left: reclaim soon, unless one is already due or was done lately."""
        if self._pending is not None:
            return
        wait = max(self._delay, self._last + self._gap - self._clock())
        loop = asyncio.get_running_loop()
        self._pending = loop.call_later(wait, self._run, context=self._context)

    def _run(self) -> None:
        self._pending = None
        started = self._clock()
        self._collect()
        if self._trim is not None:
            self._trim(0)
        self._last = self._clock()
        self.last_pause = self._last - started
        self._gap = min(MAX_INTERVAL, max(self._interval, PAUSE_SHARE * self.last_pause))
        self.runs += 1

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
