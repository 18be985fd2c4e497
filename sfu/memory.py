"""Giving memory back to the operating system after participants leave.

A participant's connection allocates through glibc malloc (OpenSSL's DTLS, libsrtp, aiohttp's
and uvloop's buffers) and pymalloc; when it leaves, the memory is free but mostly stays mapped,
held by the allocators for reuse in pieces too scattered to return. Measured with 400
join/publish/leave cycles of one participant beside another (tests/e2e/test_leaks.py,
benchmarks/README.md): RSS 102 -> 140 MB with live Python objects flat, 30 MB of it free in
glibc's heap; ``malloc_trim(0)`` gave 24 MB back. So after a leave the service trims, at most
once per :data:`TRIM_INTERVAL`, a little later (:data:`TRIM_DELAY`: leaves come in waves,
and the leaver's objects are freed by then). A trim of a heap this size takes about a
millisecond on the event loop. Not glibc (musl, macOS): nothing to do.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import ctypes.util
import time
from collections.abc import Callable

TRIM_DELAY = 2.0
TRIM_INTERVAL = 30.0


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


class MemoryTrimmer:
    """Schedules ``malloc_trim(0)`` after departures, rate-limited (``trim``, ``clock`` and
    the times: for tests)."""

    def __init__(
        self,
        trim: Callable[[int], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        delay: float = TRIM_DELAY,
        interval: float = TRIM_INTERVAL,
    ) -> None:
        self._trim = trim if trim is not None else _malloc_trim()
        self._clock = clock
        self._delay, self._interval = delay, interval
        self._last = -interval
        self._pending: asyncio.TimerHandle | None = None
        # the timer runs in a context of its own, made once: not a copy of the leaver's (its
        # log bindings), which the pending timer would keep alive after it left
        self._context = contextvars.Context()
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def departed(self) -> None:
        """A participant left: trim soon, unless one is already due or was done lately."""
        if self._trim is None or self._pending is not None:
            return
        wait = max(self._delay, self._last + self._interval - self._clock())
        loop = asyncio.get_running_loop()
        self._pending = loop.call_later(wait, self._run, context=self._context)

    def _run(self) -> None:
        self._pending = None
        self._last = self._clock()
        if self._trim is not None:
            self._trim(0)
            self.trims += 1

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
