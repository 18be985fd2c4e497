"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).

A sender numbers every packet of a transport with a 16-bit transport-wide sequence number in an
RTP header extension (§2, :data:`URI`); the receiver reports, per number, whether and when the
packet arrived, in RTCP transport-layer feedback (RTPFB, FMT 15, §3.1):

- :class:`TransportFeedback`: the RTCP packet; its FCI stays raw bytes (the server hands them to
  the egress's C parser as they are);
- :func:`decode` / :func:`encode`: the FCI, in pure Python (tests, and a cross-check of the C
  parser);
- :class:`FeedbackBuilder`: the receive side; it records (sequence number, arrival time) per
  packet and builds the feedback messages on a timer;
- :func:`transport_sequence`: the sequence number of a received RTP packet (RFC 8285 header
  extensions).

Times in the FCI: a 24-bit signed reference time in multiples of 64 ms, then one receive delta
per received packet in multiples of 250 µs, each relative to the previous received packet (the
first to the reference time). Malformed input raises ``ValueError`` saying what is wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
RTCP_FEEDBACK = "transport-cc"  # the a=rtcp-fb value
RTPFB, FMT = 205, 15

TICK_US = 250  # receive delta unit
REFERENCE_US = 64_000  # reference time unit
_TICKS_PER_REFERENCE = REFERENCE_US // TICK_US
MAX_STATUS_COUNT = 0xFFFF
_RUN_MAX = 0x1FFF  # 13-bit run length
NOT_RECEIVED, SMALL_DELTA, LARGE_DELTA = 0, 1, 2  # packet status symbols (§3.1.1)

_HEADER = struct.Struct("!BBH")
_SSRC_PAIR = struct.Struct("!II")
_FCI_HEADER = struct.Struct("!HHI")  # base seq, status count, reference time (24) + fb count (8)
_U16 = struct.Struct("!H")
_I16 = struct.Struct("!h")
_PROFILE = struct.Struct("!HH").unpack_from  # header extension profile, length in words

#: a message (RTCP header included) stays within this many bytes, to fit one datagram
MAX_PACKET_SIZE = 1200


@dataclass(frozen=True, slots=True)
class TransportFeedback:
    """RTPFB FMT 15; ``fci`` is everything after the two SSRCs, without RTCP padding."""

    sender_ssrc: int
    media_ssrc: int
    fci: bytes

    def __bytes__(self) -> bytes:
        body = _SSRC_PAIR.pack(self.sender_ssrc, self.media_ssrc) + self.fci
        padding = -len(body) % 4
        first = 0x80 | FMT
        if padding:  # RFC 3550 §6.4.1: P set, the last octet counts the padding octets
            first |= 0x20
            body += bytes(padding - 1) + bytes((padding,))
        return _HEADER.pack(first, RTPFB, len(body) // 4) + body

    @classmethod
    def parse_body(cls, fmt: int, body: bytes) -> TransportFeedback:
        if len(body) < 8:
            raise ValueError(f"RTCP transport-cc feedback truncated: 8 bytes, got {len(body)}")
        sender, media = _SSRC_PAIR.unpack_from(body)
        return cls(sender, media, bytes(body[8:]))


class FeedbackPackets(NamedTuple):
    """A decoded FCI. ``packets``: (16-bit sequence number, arrival in µs or None when not
    received), in sequence order; arrivals count from reference time 0, so only differences
    between them (also across messages) mean something."""

    base_seq: int
    reference_time: int  # signed, in 64 ms units
    fb_count: int
    packets: list[tuple[int, int | None]]


def decode(fci: bytes) -> FeedbackPackets:
    """The packets one feedback message reports (§3.1)."""
    if len(fci) < 8:
        raise ValueError(f"transport-cc feedback truncated: needs 8 bytes, got {len(fci)}")
    base_seq, count, word = _FCI_HEADER.unpack_from(fci)
    if count == 0:
        raise ValueError("transport-cc feedback reports no packets (packet status count 0)")
    reference = word >> 8
    if reference & 0x800000:
        reference -= 0x1000000
    symbols: list[int] = []
    pos = 8
    while len(symbols) < count:
        if pos + 2 > len(fci):
            raise ValueError(
                f"transport-cc feedback truncated: {len(symbols)} of {count} packet statuses "
                f"before its end at byte {len(fci)}"
            )
        chunk = _U16.unpack_from(fci, pos)[0]
        pos += 2
        if not chunk & 0x8000:  # run length chunk (§3.1.3)
            symbol, run = chunk >> 13, chunk & _RUN_MAX
            if symbol == 3:
                raise ValueError(f"transport-cc run length chunk at byte {pos - 2}: status 3")
            if run == 0:
                raise ValueError(f"transport-cc run length chunk at byte {pos - 2}: length 0")
            symbols.extend([symbol] * min(run, count - len(symbols)))
        elif not chunk & 0x4000:  # status vector chunk of 14 one-bit symbols (§3.1.4)
            symbols.extend((chunk >> shift) & 1 for shift in range(13, -1, -1))
        else:  # status vector chunk of 7 two-bit symbols
            for shift in range(12, -1, -2):
                symbol = (chunk >> shift) & 3
                if symbol == 3 and len(symbols) < count:
                    raise ValueError(f"transport-cc vector chunk at byte {pos - 2}: status 3")
                symbols.append(symbol)
    del symbols[count:]  # a vector chunk's symbols past the count are padding
    packets: list[tuple[int, int | None]] = []
    ticks = reference * _TICKS_PER_REFERENCE
    for offset, symbol in enumerate(symbols):
        seq = (base_seq + offset) & 0xFFFF
        if symbol == NOT_RECEIVED:
            packets.append((seq, None))
            continue
        size = 1 if symbol == SMALL_DELTA else 2
        if pos + size > len(fci):
            raise ValueError(
                f"transport-cc feedback truncated: the receive delta of sequence number {seq} "
                f"is past its end at byte {len(fci)}"
            )
        ticks += fci[pos] if size == 1 else _I16.unpack_from(fci, pos)[0]
        pos += size
        packets.append((seq, ticks * TICK_US))
    if len(fci) - pos > 3:
        raise ValueError(f"transport-cc feedback has {len(fci) - pos} bytes after its last delta")
    return FeedbackPackets(base_seq, reference, word & 0xFF, packets)


def _chunks(symbols: Sequence[int]) -> list[int]:
    """Packet chunks for ``symbols``: run length where a run fills at least a vector chunk (or
    ends the message), else a one-bit vector if the next 14 need no large delta, else two-bit."""
    chunks: list[int] = []
    i, n = 0, len(symbols)
    while i < n:
        symbol = symbols[i]
        run = 1
        while i + run < n and run < _RUN_MAX and symbols[i + run] == symbol:
            run += 1
        if run >= 14 or i + run == n:
            chunks.append(symbol << 13 | run)
            i += run
            continue
        window = symbols[i : i + 14]
        if LARGE_DELTA not in window:
            chunk = 0x8000
            for k, s in enumerate(window):
                chunk |= s << (13 - k)
            i += 14
        else:
            chunk = 0xC000
            for k, s in enumerate(symbols[i : i + 7]):
                chunk |= s << (12 - 2 * k)
            i += 7
        chunks.append(chunk)
    return chunks


def encode(base_seq: int, fb_count: int, arrivals: Sequence[int | None]) -> bytes:
    """The FCI reporting packet ``base_seq + i`` as arrived at ``arrivals[i]`` ticks (250 µs
    units on the receiver's clock), or not arrived (None). At least one must have arrived: the
    reference time is the first arrival rounded down to 64 ms."""
    if not 0 < len(arrivals) <= MAX_STATUS_COUNT:
        raise ValueError(f"transport-cc feedback reports 1 to 65535 packets, not {len(arrivals)}")
    first = next((t for t in arrivals if t is not None), None)
    if first is None:
        raise ValueError("transport-cc feedback needs at least one received packet")
    reference = first // _TICKS_PER_REFERENCE
    previous = reference * _TICKS_PER_REFERENCE
    symbols: list[int] = []
    deltas = bytearray()
    for t in arrivals:
        if t is None:
            symbols.append(NOT_RECEIVED)
            continue
        delta = t - previous
        previous = t
        if 0 <= delta <= 0xFF:
            symbols.append(SMALL_DELTA)
            deltas.append(delta)
        elif -0x8000 <= delta <= 0x7FFF:
            symbols.append(LARGE_DELTA)
            deltas += _I16.pack(delta)
        else:
            raise ValueError(f"receive delta of {delta * TICK_US} µs exceeds 16 bits of 250 µs")
    word = (reference & 0xFFFFFF) << 8 | (fb_count & 0xFF)
    header = _FCI_HEADER.pack(base_seq & 0xFFFF, len(arrivals), word)
    return header + b"".join(map(_U16.pack, _chunks(symbols))) + bytes(deltas)


def transport_sequence(packet: bytes, ext_id: int) -> int | None:
    """The 2-byte value of header extension ``ext_id`` (RFC 8285 one- or two-byte form) of an RTP
    packet; None when it has none, or when its header is malformed (the receive path has no use
    for the reason). Per received packet: written for speed."""
    size = len(packet)
    if size < 16 or not packet[0] & 0x10:
        return None
    pos = 12 + 4 * (packet[0] & 0x0F)
    if pos + 4 > size:
        return None
    profile, words = _PROFILE(packet, pos)
    pos += 4
    end = pos + 4 * words
    if end > size:
        return None
    if profile == 0xBEDE:  # one-byte form: 4-bit id, 4-bit length - 1; 0 is padding
        tag = ext_id << 4 | 1
        while pos < end:
            byte = packet[pos]
            if byte == tag:
                return packet[pos + 1] << 8 | packet[pos + 2] if pos + 3 <= end else None
            if byte >> 4 in (ext_id, 15):  # the wrong length, or id 15: stop processing
                return None
            pos += (byte & 0x0F) + 2 if byte else 1
    elif profile & 0xFFF0 == 0x1000:  # two-byte form: 8-bit id, 8-bit length
        while pos < end:
            element = packet[pos]
            if element == 0:
                pos += 1
                continue
            if pos + 2 > end:
                return None
            length = packet[pos + 1]
            if element == ext_id:
                if length != 2 or pos + 4 > end:
                    return None
                return packet[pos + 2] << 8 | packet[pos + 3]
            pos += 2 + length
    return None


class FeedbackBuilder:
    """The receive side: :meth:`record` each packet's transport-wide sequence number and arrival
    (``time.monotonic()``), call :meth:`build` every 50-100 ms and send what it returns.

    Each packet is reported once: a message covers everything recorded since the last one, up to
    the highest sequence number received, split when a message would not fit ``max_size`` bytes,
    65535 statuses or a 16-bit delta. A packet arriving after a message reported its number as
    lost is not reported again (the sender keeps its loss). Sequence numbers are unwrapped, so
    the 65535 -> 0 wrap and reordering within half the number space need nothing special.
    """

    def __init__(
        self, sender_ssrc: int, media_ssrc: int = 0, *, max_size: int = MAX_PACKET_SIZE
    ) -> None:
        self.sender_ssrc = sender_ssrc
        #: the feedback's media SSRC (§3.1 leaves it free: libwebrtc names one it receives)
        self.media_ssrc = media_ssrc
        self._max_fci = max_size - 12 - 3  # RTCP header and SSRCs; up to 3 octets of padding
        self._pending: list[tuple[int, float]] = []
        self._highest: int | None = None  # unwrapped
        self._next: int | None = None  # the first unwrapped number not yet reported
        self._origin: float | None = None  # arrival clock value of tick 0
        self._fb_count = 0
        self.recorded = 0
        self.messages = 0

    def record(self, seq: int, arrival: float) -> None:
        """Per received packet: cheap on purpose (the work happens in :meth:`build`)."""
        self._pending.append((seq, arrival))

    def build(self) -> list[TransportFeedback]:
        """The messages reporting what arrived since the last call (none if nothing did)."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        self.recorded += len(pending)
        if self._origin is None:
            self._origin = pending[0][1]
        origin = self._origin
        highest = pending[0][0] if self._highest is None else self._highest
        floor = self._next
        lowest = highest - 0x8000 if floor is None else floor
        ticks_per_second = 1e6 / TICK_US
        arrivals: dict[int, int] = {}
        for seq, arrival in pending:  # per packet: kept lean
            unwrapped = highest + ((seq - highest + 0x8000) & 0xFFFF) - 0x8000
            if unwrapped > highest:
                highest = unwrapped
            if unwrapped >= lowest and unwrapped not in arrivals:
                arrivals[unwrapped] = round((arrival - origin) * ticks_per_second)
        self._highest = highest
        if not arrivals:
            return []
        seqs = sorted(arrivals)
        self._next = seqs[-1] + 1
        # messages are contiguous from the first number not yet reported, so that packets lost
        # between two builds or two messages are reported lost too
        start = seqs[0] if floor is None else floor
        messages: list[TransportFeedback] = []
        i = 0
        while i < len(seqs):
            end = self._extent(seqs, arrivals, i, start)
            while True:  # shrink to the size limit
                part: list[int | None] = [None] * (seqs[end - 1] - start + 1)
                for seq in seqs[i:end]:
                    part[seq - start] = arrivals[seq]
                fci = encode(start, self._fb_count, part)
                if len(fci) <= self._max_fci or end - i == 1:
                    break
                end = i + max(1, (end - i) * self._max_fci // len(fci))
            messages.append(TransportFeedback(self.sender_ssrc, self.media_ssrc, fci))
            self._fb_count = (self._fb_count + 1) & 0xFF
            start = seqs[end - 1] + 1
            i = end
        self.messages += len(messages)
        return messages

    @staticmethod
    def _extent(seqs: list[int], arrivals: dict[int, int], i: int, start: int) -> int:
        """The end (exclusive) of the longest message from ``start`` taking ``seqs[i]`` on,
        within the status count and 16-bit delta limits. Unwrapping keeps consecutive numbers
        within 32768 of each other, so ``seqs[i]`` itself always fits."""
        previous = arrivals[seqs[i]] // _TICKS_PER_REFERENCE * _TICKS_PER_REFERENCE
        end = i
        while end < len(seqs):
            seq = seqs[end]
            delta = arrivals[seq] - previous
            if end > i and (seq - start >= MAX_STATUS_COUNT or not -0x8000 <= delta <= 0x7FFF):
                break
            previous = arrivals[seq]
            end += 1
        return end
