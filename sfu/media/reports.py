"""What the SFU needs to write RTCP reports (RFC 3550 §6.4).

- :class:`ReceptionStats`: the report block about one incoming stream: loss as in appendix A.3,
  interarrival jitter as in §6.4.1 and appendix A.8, LSR/DLSR for the sender's RTT.
- :class:`SenderClock`: the publisher's RTP clock as seen from here, from its sender reports,
  so the SR the SFU writes for a forwarded stream keeps the publisher's audio/video sync.
- NTP timestamp helpers (RFC 3550 §4) and the round-trip time from a report block (§6.4.1).
"""

from __future__ import annotations

from collections import deque

from sfu.rtp.rtcp import ReportBlock

#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_EPOCH_OFFSET = 2_208_988_800


def ntp_timestamp(wall: float) -> int:
    """Unix time in seconds -> 64-bit NTP timestamp (32.32 fixed point, wrapping at era 1)."""
    seconds = int(wall)
    fraction = int((wall - seconds) * 4294967296.0)
    return (((seconds + NTP_EPOCH_OFFSET) & 0xFFFFFFFF) << 32) | fraction


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (16.16 fixed point), as in LSR."""
    return (ntp >> 16) & 0xFFFFFFFF


def rtt_from_report(lsr: int, dlsr: int, now_wall: float) -> float | None:
    """Round-trip time from a report block about our SR (RFC 3550 §6.4.1, figure 2)."""
    if lsr == 0:
        return None  # no SR from us has reached the reporter yet
    units = (ntp_middle(ntp_timestamp(now_wall)) - lsr - dlsr) & 0xFFFFFFFF
    if units >= 0x80000000:
        return 0.0  # slightly negative: rounding of the 16.16 values
    return units / 65536.0


class ReceptionStats:
    """Reception statistics of one incoming SSRC, for the report blocks about it."""

    __slots__ = (
        "_base",
        "_cycle_base",
        "_expected_prior",
        "_highest",
        "_jitter",
        "_last_arrival",
        "_last_ts",
        "_lsr",
        "_received",
        "_received_prior",
        "_sr_at",
        "clock_rate",
    )

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self._received = 0
        self._base = 0  # lowest extended seq received
        self._cycle_base = 0  # the first packet's cycle counts as cycle 0 in reports
        self._highest = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0  # in RTP timestamp units
        self._last_arrival = 0.0
        self._last_ts = 0
        self._lsr = 0
        self._sr_at = 0.0

    @property
    def packets_received(self) -> int:
        return self._received

    @property
    def packets_lost(self) -> int:
        """Cumulative: expected minus received (negative with duplicates), not clamped."""
        if not self._received:
            return 0
        return self._highest - self._base + 1 - self._received

    @property
    def jitter_seconds(self) -> float:
        return self._jitter / self.clock_rate

    def on_packet(self, ext_seq: int, rtp_ts: int, arrival: float) -> None:
        if not self._received:
            self._base = self._highest = ext_seq
            self._cycle_base = ext_seq & ~0xFFFF
        else:
            if ext_seq > self._highest:
                self._highest = ext_seq
            elif ext_seq < self._base:
                self._base = ext_seq
            # D(i-1, i) in timestamp units, with packets in order of arrival (§6.4.1)
            sent = (rtp_ts - self._last_ts) & 0xFFFFFFFF
            if sent >= 0x80000000:
                sent -= 0x100000000
            d = (arrival - self._last_arrival) * self.clock_rate - sent
            self._jitter += (abs(d) - self._jitter) / 16.0
        self._received += 1
        self._last_arrival = arrival
        self._last_ts = rtp_ts

    def on_sender_report(self, ntp_timestamp: int, now: float) -> None:
        self._lsr = ntp_middle(ntp_timestamp)
        self._sr_at = now

    def report_block(self, ssrc: int, now: float) -> ReportBlock:
        """The block for the next RR/SR; loss fraction covers the time since the previous one."""
        expected = self._highest - self._base + 1 if self._received else 0
        expected_interval = expected - self._expected_prior
        received_interval = self._received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min((lost_interval << 8) // expected_interval, 255)
        lost = min(max(expected - self._received, -0x800000), 0x7FFFFF)
        dlsr = 0
        if self._lsr:
            dlsr = min(max(int((now - self._sr_at) * 65536.0), 0), 0xFFFFFFFF)
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=fraction,
            packets_lost=lost,
            highest_sequence=(self._highest - self._cycle_base) & 0xFFFFFFFF,
            jitter=int(self._jitter),
            lsr=self._lsr,
            dlsr=dlsr,
        )


def ntp_to_unix(ntp: int) -> float:
    """A 64-bit NTP timestamp as unix seconds (era 0)."""
    return (ntp >> 32) - NTP_EPOCH_OFFSET + (ntp & 0xFFFFFFFF) / 2**32


class PublisherClock:
    """How far a publisher's NTP clock is behind our wall clock, shared by all its streams.

    Each SR gives ``arrival - ntp``: the clock offset plus the SR's transit time plus how stale
    its NTP field was when sent (aiortc stamps the time of the last packet, not of the SR). The
    smallest value over recent SRs is the best estimate of offset + minimum transit — and since
    every stream of the publisher uses the same estimate, their relative timing is preserved
    exactly as the publisher's SRs state it (RFC 3550 §6.4.1).
    """

    __slots__ = ("_samples",)

    WINDOW = 16  # SRs; about 8-16 s of one publisher's reports, so slow drift is followed

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=self.WINDOW)

    def on_sender_report(self, ntp_timestamp: int, now_wall: float) -> None:
        self._samples.append(now_wall - ntp_to_unix(ntp_timestamp))

    @property
    def offset(self) -> float | None:
        """Our wall clock minus the publisher's NTP clock (seconds), or None before any SR."""
        return min(self._samples) if self._samples else None


class SenderClock:
    """One publisher stream's RTP clock as its latest SR states it, read on our wall clock."""

    __slots__ = ("_ntp", "_publisher", "_rtp")

    def __init__(self, publisher: PublisherClock | None = None) -> None:
        self._publisher = publisher if publisher is not None else PublisherClock()
        self._ntp: int | None = None
        self._rtp = 0

    @property
    def last_ntp(self) -> int | None:
        """The NTP timestamp of the latest sender report, or None before any."""
        return self._ntp

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int, now_wall: float) -> None:
        self._ntp = ntp_timestamp
        self._rtp = rtp_timestamp
        self._publisher.on_sender_report(ntp_timestamp, now_wall)

    def rtp_at(self, now_wall: float, clock_rate: int) -> int | None:
        """The publisher's RTP timestamp for our wall-clock time ``now_wall``, or None."""
        offset = self._publisher.offset
        if self._ntp is None or offset is None:
            return None
        elapsed = now_wall - offset - ntp_to_unix(self._ntp)
        return (self._rtp + round(elapsed * clock_rate)) & 0xFFFFFFFF
