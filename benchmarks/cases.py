"""What one benchmark configuration is, and what one measured run of it produced."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_CASE = re.compile(r"^(?:(\d+)x)?(\d+)@(\d+)$")

#: name -> Janus event_loops (None: Janus's default threading); "aiosfu" is `sfu serve`.
JANUS_FORWARDERS: dict[str, int | None] = {"janus-el2": 2, "janus-default": None}
FORWARDERS = ("aiosfu", *JANUS_FORWARDERS)
LABELS = {
    "aiosfu": "aiosfu (sfu serve, uvloop)",
    "janus-el2": "Janus VideoRoom, event_loops = 2",
    "janus-default": "Janus VideoRoom, default threading",
}
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True, slots=True, order=True)
class Case:
    """``rooms`` rooms, each with one publisher sending ``rate`` packets/s to ``subscribers``."""

    rooms: int
    subscribers: int
    rate: int

    @classmethod
    def parse(cls, text: str) -> Case:
        """``K@RATE`` (one room, K subscribers) or ``RxK@RATE`` (R rooms of K subscribers)."""
        match = _CASE.match(text.strip())
        if match is None:
            raise ValueError(f"bad case {text!r}: want K@RATE or RxK@RATE, e.g. 16@4000, 4x4@2000")
        rooms, subscribers, rate = (
            int(match.group(1) or 1),
            int(match.group(2)),
            int(match.group(3)),
        )
        if min(rooms, subscribers, rate) < 1:
            raise ValueError(f"bad case {text!r}: every number must be positive")
        return cls(rooms, subscribers, rate)

    @property
    def key(self) -> str:
        prefix = f"{self.rooms}x" if self.rooms > 1 else ""
        return f"{prefix}{self.subscribers}@{self.rate}"

    @property
    def label(self) -> str:
        rooms = f"{self.rooms} rooms x " if self.rooms > 1 else ""
        return f"{rooms}1→{self.subscribers} x {self.rate:,}/s"

    @property
    def forwarded_rate(self) -> int:
        return self.rooms * self.subscribers * self.rate


def percentile_key(p: float) -> str:
    return f"p{p:g}"


@dataclass(slots=True)
class Trial:
    """One measured window of one forwarder on one case."""

    forwarder: str
    case: str
    run: int
    seconds: float
    sent: int  # packets the publishers sent in the window
    expected: int  # sent x subscribers
    received: int  # packets the subscribers got, of those sent in the window
    server_cpu_s: float
    server_system_s: float  # of which in the kernel (on loopback: also delivering what it sent)
    server_ctx_switches: int
    server_threads: int
    server_rss_mb: float
    publisher_cpu_pct: float
    subscribers_cpu_pct: float
    send_lag_us: dict[str, float]
    first_packet_ms: float
    latency_ms: dict[str, float]
    per_subscriber: tuple[int, int]  # fewest and most packets one subscriber got
    udp_drops: dict[str, int]  # datagrams the kernel dropped per role (receive buffer full)
    udp_errors: dict[str, int]  # the namespace's UDP error counters over the window
    other_cpu_pct: float  # CPU used on the machine by processes outside the benchmark
    srtp_rejected: int  # packets the subscribers' SRTP refused
    sfu_latency_ms: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def cpu_us_per_packet(self) -> float:
        return self.server_cpu_s * 1e6 / self.received if self.received else float("nan")

    def as_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__slots__}
        data["per_subscriber"] = list(self.per_subscriber)
        data.update(
            lost=self.lost,
            cpu_us_per_packet=self.cpu_us_per_packet,
            forwarded_per_s=self.received / self.seconds,
            server_cpu_pct=100 * self.server_cpu_s / self.seconds,
            ctx_switches_per_packet=self.server_ctx_switches / max(self.received, 1),
            system_pct=100 * self.server_system_s / self.server_cpu_s if self.server_cpu_s else 0.0,
        )
        return data
