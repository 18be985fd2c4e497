"""Retransmission support on the publisher side of the SFU (RFC 4585 §6.2.1 generic NACK, with
RFC 4588 retransmissions answering them).

:class:`LossTracker` decides which packets of a publisher's stream to NACK and when;
:class:`PacketHistory` keeps recent packets by extended sequence number to answer NACKs.
"""

from __future__ import annotations

from array import array
from itertools import islice
from typing import Generic, TypeVar

T = TypeVar("T")

#: Shortest time between two NACKs of one packet, whatever the RTT estimate says (seconds).
MIN_RETRY_INTERVAL = 0.02


#: A missing packet: (detected, last NACKed, NACKs sent). A tuple, shared by every number of a
#: gap until it is NACKed: a jump of 500 numbers is one dict.fromkeys, not 500 objects.
_Missing = tuple[float, float, int]


class LossTracker:
    """The sequence numbers missing from one incoming stream, and when to NACK each (RFC 4585)."""

    __slots__ = ("_highest", "_missing", "max_age", "max_attempts", "max_missing")

    def __init__(
        self, max_missing: int = 512, max_age: float = 1.0, max_attempts: int = 10
    ) -> None:
        self.max_missing = max_missing
        self.max_age = max_age
        self.max_attempts = max_attempts
        self._highest: int | None = None
        self._missing: dict[int, _Missing] = {}  # ascending: keys are inserted in order

    @property
    def missing(self) -> int:
        return len(self._missing)

    def on_packet(self, ext_seq: int, now: float) -> None:
        highest = self._highest
        if highest is None or ext_seq - highest > self.max_missing + 1:
            # first packet, or a jump too large to recover: start over from here
            self._missing.clear()
            self._highest = ext_seq
        elif ext_seq == highest + 1:  # in order: the common case
            self._highest = ext_seq
        elif ext_seq > highest:
            missing = self._missing
            # of a long gap only the newest max_missing could be kept
            first = max(highest + 1, ext_seq - self.max_missing)
            missing.update(dict.fromkeys(range(first, ext_seq), (now, 0.0, 0)))
            excess = len(missing) - self.max_missing
            if excess > 0:
                # forget the oldest in one pass: taking the first key again and again rescans
                # the deleted ones each time, and a publisher's jumps made that quadratic
                for seq in list(islice(missing, excess)):
                    del missing[seq]
            self._highest = ext_seq
        elif self._missing:
            self._missing.pop(ext_seq, None)

    def due(self, now: float, rtt: float) -> list[int]:
        """Extended seqs to NACK now; each call counts as an attempt for those returned."""
        interval = max(rtt, MIN_RETRY_INTERVAL)
        result: list[int] = []
        expired: list[int] = []
        missing = self._missing
        for seq, (detected, last_sent, attempts) in missing.items():
            if attempts >= self.max_attempts or now > detected + self.max_age:
                expired.append(seq)
            elif attempts == 0 or now >= last_sent + interval:
                result.append(seq)
        for seq in result:  # (the values change after the walk: no dict change during it)
            detected, _, attempts = missing[seq]
            missing[seq] = (detected, now, attempts + 1)
        for seq in expired:
            del missing[seq]
        return result


class PacketHistory(Generic[T]):
    """Recent packets by extended sequence number: at most ``size``, none older than ``max_age``.

    A ring indexed by the key's low bits; an entry leaves when a key ``size`` later takes its
    slot, or when it is older than ``max_age`` at a later :meth:`put` — so a low-rate stream
    keeps ``max_age`` seconds, not ``size`` packets (at 30 packets/s, 512 would be 17 s of
    video held in memory to answer NACKs that stop mattering after a few round trips).
    """

    __slots__ = ("_keys", "_mask", "_oldest", "_times", "_values", "max_age")

    def __init__(self, size: int, max_age: float = float("inf")) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"history size {size} is not a power of two")
        self._mask = size - 1
        self.max_age = max_age
        self._keys = array("q", [-1]) * size
        self._times = array("d", [0.0]) * size
        self._values: list[T | None] = [None] * size
        self._oldest = -1  # no entry below this key is kept (-1: nothing put yet)

    def put(self, key: int, value: T, now: float) -> None:
        mask = self._mask
        slot = key & mask
        self._keys[slot] = key
        self._times[slot] = now
        self._values[slot] = value
        oldest = self._oldest
        if oldest < 0:
            oldest = key
        elif key - oldest > mask:
            oldest = key - mask  # every slot below was overwritten or belongs to an older lap
        # evict from the oldest end what aged out; usually one entry per put, in steady state
        keys, times, values = self._keys, self._times, self._values
        limit = now - self.max_age
        while oldest < key:
            slot = oldest & mask
            if keys[slot] == oldest:
                if times[slot] >= limit:
                    break
                keys[slot] = -1
                values[slot] = None
            oldest += 1
        self._oldest = oldest

    def get(self, key: int) -> T | None:
        slot = key & self._mask
        return self._values[slot] if self._keys[slot] == key else None

    def clear(self) -> None:
        size = self._mask + 1
        self._keys = array("q", [-1]) * size
        self._values = [None] * size
        self._oldest = -1

    def __len__(self) -> int:
        return sum(1 for value in self._values if value is not None)
