"""What one benchmark configuration is, and what one measured run of it produced."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_CASE = re.compile(r"^(sim:)?(?:(\d+)x)?(\d+)@(\d+)$")

#: name -> Janus event_loops (None: Janus's default threading); "aiosfu" is `sfu serve`.
JANUS_FORWARDERS: dict[str, int | None] = {"janus-el2": 2, "janus-default": None}
#: ``sfu serve`` whose subscribers do not negotiate transport-cc (whatever ``--transport-cc``
#: says) but do the same per-packet bookkeeping (``peers --transport-cc shadow``): the server's
#: cost without stamping and feedback, in the same run, beside a load that costs the same
AIOSFU_NO_TCC = "aiosfu-no-tcc"
AIOSFU = ("aiosfu", AIOSFU_NO_TCC)
#: name -> ``sfu serve --workers N``: the rooms in N worker processes, everything else as aiosfu
AIOSFU_WORKERS: dict[str, int] = {"aiosfu-w2": 2}
#: ``sfu serve --socket-per-participant``: a socket per participant, as before the shared port
#: (every copy its own sendto) — the shared port's before and after in one run
AIOSFU_SOCKETS = "aiosfu-sockets"
#: every forwarder that is ``sfu serve`` (AIOSFU is the transport-cc pair benchmarks.tcc_pairs runs)
SFU_SERVE = (*AIOSFU, *AIOSFU_WORKERS, AIOSFU_SOCKETS)
FORWARDERS = (*SFU_SERVE, *JANUS_FORWARDERS)
#: ``--forwarders`` when none are given (aiosfu-w2 on request: it needs more than one core)
DEFAULT_FORWARDERS = (*AIOSFU, *JANUS_FORWARDERS)
LABELS = {
    "aiosfu": "aiosfu (sfu serve, uvloop)",
    AIOSFU_NO_TCC: "aiosfu, subscribers without transport-cc (same load)",
    "aiosfu-w2": "aiosfu, sfu serve --workers 2",
    AIOSFU_SOCKETS: "aiosfu, a socket per participant (no sendmmsg)",
    "janus-el2": "Janus VideoRoom, event_loops = 2",
    "janus-default": "Janus VideoRoom, default threading",
}
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True, slots=True)
class SimulcastLayer:
    """One encoding of a simulcast publisher: its rid, keyframe size and the bitrate a
    browser's encoder targets for it (which sets its share of the publisher's packets)."""

    rid: str
    width: int
    height: int
    bitrate: int

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


#: smallest first: a layer's index here is aiosfu's ``maxLayer`` and Janus's ``substream``
SIMULCAST_LAYERS = (
    SimulcastLayer("q", 320, 180, 150_000),
    SimulcastLayer("h", 640, 360, 500_000),
    SimulcastLayer("f", 1280, 720, 1_500_000),
)
#: the rid order of each forwarder's offer. aiosfu ranks layers by measured size, so it gets
#: Chromium's (the order a page lists its encodings, low to high); Janus takes the first rid
#: as the highest layer, so it gets them high to low: its substream N is then our layer N.
SIMULCAST_RIDS = {"aiosfu": ("q", "h", "f"), "janus": ("f", "h", "q")}
#: ``--case simulcast``: two publishers, each with 12 subscribers, 4 per layer
SIMULCAST_CASE = "sim:2x12@2000"


def layer_index(rid: str) -> int:
    return next(i for i, layer in enumerate(SIMULCAST_LAYERS) if layer.rid == rid)


def layer_rates(rate: int, fps: int) -> tuple[int, ...]:
    """Packets/s of each layer (smallest first): ``rate`` split in proportion to the layers'
    bitrates (equal payload sizes), at least one packet per frame."""
    total = sum(layer.bitrate for layer in SIMULCAST_LAYERS)
    return tuple(max(fps, round(rate * layer.bitrate / total)) for layer in SIMULCAST_LAYERS)


def subscriber_layer(index: int) -> int:
    """The layer the ``index``-th subscriber of a room asks for: a third on each."""
    return index % len(SIMULCAST_LAYERS)


@dataclass(frozen=True, slots=True, order=True)
class Case:
    """``rooms`` rooms, each with one publisher sending ``rate`` packets/s to ``subscribers``.

    ``simulcast``: the publisher sends ``rate`` packets/s in three rid layers
    (:data:`SIMULCAST_LAYERS`, :func:`layer_rates`) and each subscriber asks for one layer
    (:func:`subscriber_layer`).
    """

    rooms: int
    subscribers: int
    rate: int
    simulcast: bool = False

    @classmethod
    def parse(cls, text: str) -> Case:
        """``K@RATE`` (one room, K subscribers), ``RxK@RATE`` (R rooms of K subscribers),
        ``sim:K@RATE`` / ``sim:RxK@RATE`` (simulcast), ``simulcast`` (:data:`SIMULCAST_CASE`)."""
        text = text.strip()
        if text == "simulcast":
            text = SIMULCAST_CASE
        match = _CASE.match(text)
        if match is None:
            raise ValueError(
                f"bad case {text!r}: want K@RATE, RxK@RATE or sim:RxK@RATE, "
                "e.g. 16@4000, 4x4@2000, sim:2x12@2000"
            )
        rooms, subscribers, rate = (
            int(match.group(2) or 1),
            int(match.group(3)),
            int(match.group(4)),
        )
        if min(rooms, subscribers, rate) < 1:
            raise ValueError(f"bad case {text!r}: every number must be positive")
        return cls(rooms, subscribers, rate, bool(match.group(1)))

    @property
    def key(self) -> str:
        prefix = f"{self.rooms}x" if self.rooms > 1 else ""
        return f"{'sim:' if self.simulcast else ''}{prefix}{self.subscribers}@{self.rate}"

    @property
    def label(self) -> str:
        rooms = f"{self.rooms} rooms x " if self.rooms > 1 else ""
        layers = " in 3 layers" if self.simulcast else ""
        return f"{rooms}1→{self.subscribers} x {self.rate:,}/s{layers}"

    @property
    def forwarded_rate(self) -> int:
        if not self.simulcast:
            return self.rooms * self.subscribers * self.rate
        rates = layer_rates(self.rate, 30)
        per_room = sum(rates[subscriber_layer(j)] for j in range(self.subscribers))
        return self.rooms * per_room


def layer_stats(
    sent_by_layer: dict[str, list[int]],
    subscribers: list[dict[str, Any]],
    seconds: float,
    payload: int,
) -> list[dict[str, Any]]:
    """Per simulcast layer, over one window: what each publisher sent of it (``sent_by_layer``:
    room -> packets per layer, sent in the window) and what the subscribers asking for it got
    (``subscribers``: one ``{"room", "layer", "by_layer"}`` each, the packets of each layer
    they received of those sent in the window). ``other_layers`` counts packets of a layer
    they did not ask for: it must be 0."""
    stats = []
    for index, layer in enumerate(SIMULCAST_LAYERS):
        mine = [s for s in subscribers if s["layer"] == index]
        own = [s["by_layer"][index] for s in mine]
        per_s = [n / seconds for n in own] or [0.0]
        stats.append(
            {
                "layer": index,
                "rid": layer.rid,
                "size": layer.size,
                "subscribers": len(mine),
                "sent_per_s": sum(c[index] for c in sent_by_layer.values())
                / max(len(sent_by_layer), 1)
                / seconds,
                "expected": sum(sent_by_layer[s["room"]][index] for s in mine),
                "received": sum(own),
                "forwarded_per_s": sum(own) / seconds,
                "per_subscriber_per_s": [min(per_s), max(per_s)],
                "per_subscriber_kbit_s": [r * payload * 8 / 1000 for r in (min(per_s), max(per_s))],
                # every packet they got, by the layer it belongs to: only ``index`` may be > 0
                "received_by_layer": [sum(s["by_layer"][i] for s in mine) for i in range(3)],
                "other_layers": sum(sum(s["by_layer"]) - s["by_layer"][index] for s in mine),
            }
        )
    return stats


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
    #: sfu serve --workers N: per worker (/healthz at the window's end) its index, pid, rooms
    #: and CPU seconds in the window
    workers: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)
    layers: list[dict[str, Any]] | None = None  # simulcast: per layer (see layer_stats)

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
