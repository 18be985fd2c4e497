"""Which packets of one source to trust, before anything of them is forwarded (RFC 3550 §A.1).

A publisher controls its own sequence numbers: a stack that restarts, or garbage, can jump
anywhere in the 16-bit space, and a jump passed through the munger reaches every subscriber's
jitter buffer. :class:`SequenceValidator` follows appendix A.1's ``update_seq`` and its constants,
and keeps the stream's extended sequence numbers (A.1's cycle count) as it goes:

- a packet a little ahead of the highest one (a gap of at most :data:`MAX_GAP`) is taken at once;
- a packet behind it, among the last ``window`` numbers (at least :data:`MAX_MISORDER`), is taken
  if it is one the stream skipped (reordered, or resent after a NACK), refused if not (a
  duplicate, or from before the source started);
- anything else is a jump, held in probation: the caller keeps that one packet and forwards it only
  if the next packet is its successor (``MIN_SEQUENTIAL`` = 2). A confirmed jump of less than
  :data:`MAX_DROPOUT` continues the stream after a gap; any other is a restart of the source
  (A.1's ``init_seq``), numbered on from beyond everything before (the caller re-bases it).

A.1 takes any forward gap below ``MAX_DROPOUT`` at once; here a gap of more than ``MAX_GAP`` also
waits for its successor. That costs a genuine stream one packet interval after a burst of loss,
and lets a random sequence number pass with probability MAX_GAP / 65536 (plus the holes a lossy
link leaves behind) instead of (MAX_DROPOUT + MAX_MISORDER) / 65536. A source restarting backwards
is refused rather than re-synced while its numbers are ones already received (SRTP's replay check
refuses those anyway).

Retransmissions (RFC 4588 RTX) go through :meth:`check_retransmission`: only a packet missing
from the last ``window`` numbers is taken. What is missing is kept as a set of holes, so a packet
in order costs a subtraction, a mask and two comparisons: no clock, no allocation beyond the int
returned.
"""

from __future__ import annotations

from typing import Final

#: RFC 3550 §A.1: a forward jump of this much or more is a restart, not a gap.
MAX_DROPOUT: Final = 3000
#: RFC 3550 §A.1: how far behind the highest a packet may be and still count as reordered (the
#: smallest window; a stream answering NACKs uses the NACK window instead).
MAX_MISORDER: Final = 100
#: RFC 3550 §A.1: packets in sequence that make a new (or restarted) source valid.
MIN_SEQUENTIAL: Final = 2
#: Forward gaps up to this are taken at once; larger ones wait for the next packet to confirm them.
MAX_GAP: Final = 16

# verdicts of a packet that gets no extended sequence number (every extended one is >= 0)
#: refused: a duplicate, or a retransmission of nothing missing; count it and forget it
DROP: Final = -1
#: held in probation: keep this packet (only the latest one) until its successor confirms it
HOLD: Final = -2
#: the held packet and this one are in sequence, after a gap: feed the held one, then this one
CONTINUED: Final = -3
#: the same, but the source (re)started: re-base what follows, then feed both
RESTARTED: Final = -4


class SequenceValidator:
    """Decides per packet of one SSRC: take (its extended seq), drop, hold, or re-sync."""

    __slots__ = ("_bad", "_holes", "_max", "_window", "previous_highest")

    def __init__(self, window: int = 512) -> None:
        """``window``: how many numbers behind the highest can still be taken."""
        if window < MAX_MISORDER:
            raise ValueError(f"window {window} is below {MAX_MISORDER}")
        self._max = -1  # highest extended seq taken; -1 before the source is valid
        self._bad = -1  # the seq that would confirm the held packet (A.1's bad_seq)
        self._window = window
        self._holes: dict[int, None] = {}  # extended seqs skipped, ascending as inserted
        #: the highest extended seq before the last restart (-1: the source had none)
        self.previous_highest = -1

    @property
    def highest(self) -> int:
        """The highest extended sequence number taken so far (-1: none yet)."""
        return self._max

    def check(self, seq: int) -> int:
        """A packet of the stream: its extended sequence number, or a verdict (< 0)."""
        top = self._max
        if (seq - top) & 0xFFFF == 1 and top >= 0:  # the usual case: the next one
            self._max = top = top + 1
            return top
        return self._unusual(seq, top, (seq - top) & 0xFFFF)

    def _unusual(self, seq: int, top: int, delta: int) -> int:
        if top >= 0:
            if delta <= MAX_GAP:
                if delta == 0:
                    return DROP
                self._skip(top + 1, top + delta)
                self._max = top + delta
                return self._max
            back = 0x10000 - delta
            if back <= self._window:  # reordered, resent, or a duplicate
                return self._fill(top - back)
        if seq == self._bad:
            return self._sync(seq, top)
        self._bad = (seq + 1) & 0xFFFF
        return HOLD

    def check_retransmission(self, seq: int) -> int:
        """A resent packet (an RTX packet's original sequence number): taken only if missing."""
        top = self._max
        back = (top - seq) & 0xFFFF
        if top < 0 or back == 0 or back > self._window:
            return DROP
        return self._fill(top - back)

    def _fill(self, ext: int) -> int:
        try:
            del self._holes[ext]
        except KeyError:
            return DROP
        return ext

    def _skip(self, start: int, stop: int) -> None:
        """Numbers ``start`` .. ``stop - 1`` are missing; forget holes beyond the window."""
        holes = self._holes
        holes.update(dict.fromkeys(range(max(start, stop - self._window), stop)))
        if len(holes) > self._window + 64:  # a lossy stream: prune now and then, not per gap
            oldest = stop - self._window
            for ext in [e for e in holes if e < oldest]:
                del holes[ext]

    def _sync(self, seq: int, top: int) -> int:
        """``seq`` follows the held packet: take both (the caller feeds them through check)."""
        held = (seq - 1) & 0xFFFF
        self._bad = -1
        gap = (held - top) & 0xFFFF
        if top >= 0 and 0 < gap < MAX_DROPOUT:
            self._skip(top + 1, top + gap)  # they may still come
            self._max = top + gap - 1
            return CONTINUED
        # A.1's init_seq: two cycles on from the old numbers, so none is ever reused and the
        # low 16 bits stay the wire's (NACKs and reports name packets by them)
        self.previous_highest = top
        self._holes.clear()
        base = 0x10000 if top < 0 else ((top >> 16) + 2) << 16
        self._max = base + held - 1
        return RESTARTED
