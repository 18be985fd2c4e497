"""Unwrapping of RTP sequence numbers and timestamps into unbounded Python ints.

RFC 3550 §A.1 extends the 16-bit sequence number with a cycle count; the same idea applies to the
32-bit timestamp. Each value is placed relative to the previous one: the nearer of the two
candidates (forward or backward, within half the number space) wins, so wrap-around in either
direction and reordering are handled alike. The first value maps into the second cycle, so a
reordered packet older than the first never gets a negative number.
"""

from __future__ import annotations


class SequenceUnwrapper:
    """16-bit RTP sequence numbers -> extended sequence numbers (first packet: 65536 + seq)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = -1

    def unwrap(self, seq16: int) -> int:
        last = self._last
        if last < 0:
            ext = 0x10000 + seq16
        else:
            delta = (seq16 - last) & 0xFFFF
            ext = last + delta if delta < 0x8000 else last + delta - 0x10000
        self._last = ext
        return ext


class TimestampUnwrapper:
    """32-bit RTP timestamps -> extended timestamps (first packet: 2**32 + timestamp)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = -1

    def unwrap(self, ts32: int) -> int:
        last = self._last
        if last < 0:
            ext = 0x100000000 + ts32
        else:
            delta = (ts32 - last) & 0xFFFFFFFF
            ext = last + delta if delta < 0x80000000 else last + delta - 0x100000000
        self._last = ext
        return ext
