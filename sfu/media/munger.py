"""Sequence number and timestamp rewriting for one outgoing RTP stream.

A subscriber must see one continuous stream (RFC 3550 §5.1: sequence numbers increment by one per
packet, timestamps advance with the media clock) even though what is forwarded changes: a new
publisher on a reused m-line, a simulcast layer switch, packets the SFU decides not to send. RFC
7667 §3.7 (selective forwarding middlebox) describes the rewriting this implies.

Within one source the outgoing numbers are the incoming ones plus an offset. Packets deliberately
dropped while newest shrink the offset for every later packet, so they leave no gap; a packet that
arrives late (reordered) gets the number it would have had, which needs the list of those drops.

The munger sees only numbers, so the caller feeds it packets of the current source alone (it
checks the SSRC): a late packet of an old source can be refused only if it is numbered before the
new source's start.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left

#: A packet further than this behind the newest one of its source cannot be placed any more.
MAX_REORDER = 1000
#: How many recently sent numbers :meth:`RtpMunger.source_seq` can map back (a power of two).
HISTORY_SIZE = 512


class RtpMunger:
    """Maps (extended incoming seq, incoming timestamp) -> (outgoing seq, outgoing timestamp)."""

    __slots__ = (
        "_drops",
        "_generation",
        "_highest_in",
        "_highest_out",
        "_hist_gen",
        "_hist_in",
        "_hist_out",
        "_initial_seq",
        "_initial_ts",
        "_last_ts",
        "_seq_offset",
        "_start",
        "_ts_offset",
    )

    def __init__(self, initial_seq: int, initial_ts: int, history: bool = True) -> None:
        self._initial_seq = initial_seq & 0xFFFF
        self._initial_ts = initial_ts & 0xFFFFFFFF
        self._start: int | None = None  # first extended seq of the current source
        self._generation = 0  # counts sources, so history entries can tell them apart
        self._highest_in = 0  # newest incoming seq forwarded or dropped in the current source
        self._highest_out = -1  # newest outgoing seq (extended), -1 before anything was sent
        self._last_ts = 0  # outgoing timestamp of that packet
        self._seq_offset = 0
        self._ts_offset = 0
        self._drops: list[int] = []  # incoming seqs dropped while newest, ascending
        # arrays of machine integers: a list of Python ints would cost ~5x the memory; none at
        # all for a stream whose NACKs are never answered (audio: no packet history upstream)
        size = HISTORY_SIZE if history else 0
        self._hist_out = array("q", [-1]) * size
        self._hist_in = array("q", [0]) * size
        self._hist_gen = array("q", [0]) * size

    @property
    def last_seq(self) -> int | None:
        return None if self._highest_out < 0 else self._highest_out & 0xFFFF

    @property
    def last_ts(self) -> int | None:
        return None if self._highest_out < 0 else self._last_ts

    @property
    def ts_offset(self) -> int:
        """Outgoing minus incoming timestamp of the current source (mod 2^32 once applied)."""
        return self._ts_offset

    @property
    def generation(self) -> int:
        """Number of the current source (1 for the first); see :meth:`source_packet`."""
        return self._generation

    def switch_source(self, first_ext_seq: int, first_ts: int, ts_gap: int) -> None:
        """The next packets come from a new source, whose first packet is ``first_ext_seq``."""
        if self._highest_out < 0:
            out_seq, out_ts = self._initial_seq, self._initial_ts
        else:
            out_seq, out_ts = self._highest_out + 1, self._last_ts + max(ts_gap, 1)
        self._start = first_ext_seq
        self._generation += 1
        self._highest_in = first_ext_seq - 1
        self._seq_offset = out_seq - first_ext_seq
        self._ts_offset = out_ts - first_ts
        self._drops.clear()

    def forward(self, ext_seq: int, ts: int) -> tuple[int, int] | None:
        """Outgoing (seq, timestamp) for a packet to send, or None if it cannot be placed."""
        start = self._start
        if start is None:  # the very first packet starts the first source
            self.switch_source(ext_seq, ts, 0)
            start = ext_seq
        if ext_seq > self._highest_in:
            # newest so far; drops only ever leave its number above the last one sent
            self._highest_in = ext_seq
            out = ext_seq + self._seq_offset
            out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
            self._highest_out = out
            self._last_ts = out_ts
        else:
            if ext_seq < start or self._highest_in - ext_seq > MAX_REORDER:
                return None
            drops = self._drops
            i = bisect_left(drops, ext_seq)
            if i < len(drops) and drops[i] == ext_seq:
                return None  # its number went to the packet after it
            # later drops shrank the offset after this packet's turn: add them back
            out = ext_seq + self._seq_offset + len(drops) - i
            out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
            if out > self._highest_out:
                # numbered after the newest sent (the drops after it made room): the newest
                # now, or the next source would reuse its number
                self._highest_out = out
                self._last_ts = out_ts
        if self._hist_out:
            slot = out & (HISTORY_SIZE - 1)
            self._hist_out[slot] = out
            self._hist_in[slot] = ext_seq
            self._hist_gen[slot] = self._generation
        return out & 0xFFFF, out_ts

    def drop(self, ext_seq: int) -> None:
        """The packet ``ext_seq`` is not sent; if it is the newest, later packets close the gap."""
        if self._start is None or ext_seq <= self._highest_in:
            return  # nothing to renumber yet, or out of order: the gap stays
        self._highest_in = ext_seq
        self._seq_offset -= 1
        drops = self._drops
        drops.append(ext_seq)
        oldest = ext_seq - MAX_REORDER
        if drops[0] < oldest:
            del drops[: bisect_left(drops, oldest)]

    def source_packet(self, out_seq16: int) -> tuple[int, int] | None:
        """(source generation, extended incoming seq) behind a recently sent outgoing seq."""
        highest = self._highest_out
        out = highest - ((highest - out_seq16) & 0xFFFF)
        if highest < 0 or highest - out >= len(self._hist_out):
            return None
        slot = out & (HISTORY_SIZE - 1)
        if self._hist_out[slot] != out:
            return None
        return self._hist_gen[slot], self._hist_in[slot]

    def source_seq(self, out_seq16: int) -> int | None:
        """The extended incoming seq sent as ``out_seq16`` (recent ones only), for NACKs."""
        found = self.source_packet(out_seq16)
        return None if found is None else found[1]
