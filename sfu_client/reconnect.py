"""When the client tries again to resume or to join again: backoff, bounded in time and count.

Pure logic with an injected clock (``loop.time`` in the client, a fake one in tests).
"""

from __future__ import annotations

from collections.abc import Callable


class Backoff:
    """Waits between attempts: ``first``, doubling up to ``longest``; none once ``attempts``
    attempts failed (None: no limit), nor when the wait would reach ``within`` seconds from
    creation (no time would be left for the attempt after it)."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        first: float,
        longest: float,
        within: float,
        attempts: int | None = None,
    ) -> None:
        if first <= 0 or longest < first:
            raise ValueError(f"backoff waits must satisfy 0 < first <= longest: {first}, {longest}")
        self._clock = clock
        self._deadline = clock() + within
        self._wait = first
        self._longest = longest
        self._attempts = attempts
        #: failed attempts reported so far
        self.failed = 0

    def remaining(self) -> float:
        """Seconds left before the deadline (0 once it passed): an attempt's own timeout."""
        return max(0.0, self._deadline - self._clock())

    def next_wait(self) -> float | None:
        """After a failed attempt: how long to wait before the next, or None to give up."""
        self.failed += 1
        if self._attempts is not None and self.failed >= self._attempts:
            return None
        wait = self._wait
        if wait >= self.remaining():
            return None  # no time would be left for the attempt after it
        self._wait = min(wait * 2, self._longest)
        return wait
