"""How much a subscriber's NACKs may make the server send (RFC 4585 §6.2.1 leaves to the sender
whether and when to retransmit).

Answering every NACK is what repairs a lossy link, and what a hostile subscriber can abuse: a
NACK for every sequence number of the history, a thousand times a second, would make the server
send its whole history as often — for one subscriber's asking. A :class:`RetransmitBudget` lets
retransmissions grow with what the down-track forwards (one per packet forwarded) plus a small
allowance of their own, and holds a bounded reserve, so a burst of losses (a keyframe's packets)
is repaired at once and a flood costs at most about as much again as the stream itself.
"""

from __future__ import annotations

#: retransmissions allowed per second beyond one per forwarded packet (a quiet audio stream)
BASE_RATE = 20.0
#: the most that can be saved up: a keyframe's worth of packets lost at once
RESERVE = 256.0


class RetransmitBudget:
    """Tokens: one per packet forwarded, BASE_RATE per second, at most RESERVE; a retransmission
    spends one. Pure: the caller gives the forwarded total and the time."""

    __slots__ = ("_forwarded", "_refilled", "_tokens", "refused")

    def __init__(self) -> None:
        self._tokens = RESERVE
        self._forwarded = 0
        self._refilled: float | None = None
        #: retransmissions refused so far
        self.refused = 0

    def allow(self, forwarded: int, now: float) -> bool:
        """Whether one more retransmission may go now; ``forwarded``: packets forwarded so far."""
        elapsed = 0.0 if self._refilled is None else max(0.0, now - self._refilled)
        gained = (forwarded - self._forwarded) + BASE_RATE * elapsed
        self._forwarded, self._refilled = forwarded, now
        self._tokens = min(RESERVE, self._tokens + max(0.0, gained))
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.refused += 1
        return False
