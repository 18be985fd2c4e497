"""How fast one signaling connection's messages are handled: a token bucket (rate, burst).

A client that sends faster than ``rate`` is not refused: its messages wait. The server reads
its socket no faster than that, so TCP's flow control pushes back on the sender, and a flood
from one socket costs the event loop no more than ``rate`` messages a second — the other
connections' messages go on being answered at once. Pure: the caller gives the time.
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_at", "_burst", "_rate", "_tokens", "delayed")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1: {rate}, {burst}")
        self._rate, self._burst = rate, burst
        self._tokens, self._at = burst, now
        #: messages that had to wait
        self.delayed = 0

    def take(self, now: float) -> float:
        """Take a token for one message: 0 if it may be handled now, else the seconds to wait
        first (the token is taken either way: the next one waits behind it)."""
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        self._tokens -= 1.0
        if self._tokens > -1e-9:  # (not a wait of rounding errors)
            return 0.0
        self.delayed += 1
        return -self._tokens / self._rate
