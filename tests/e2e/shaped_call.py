"""A call over a shaped link, and what to read from what its subscribers saw.

:func:`shaped_call` sets up what the shaped-link tests and ``benchmarks/bwe_scenarios.py``
share: the server, a simulcast publisher (``shaped_publisher``) and an unshaped subscriber on
127.0.0.1 in the server's namespace, a shaped subscriber behind the veth (``shaped_subscriber``;
each a process of its own), and samples of the link every 0.5 s. The calling thread stays in
the server's namespace meanwhile, for a test's own clients. The functions below read layers,
freezes, bitrates and loss from what the processes report.

Freeze (our definition, that of webrtc-stats' ``freezeCount`` with the median for the mean): a
gap between two decoded frames longer than max(3 x the median frame interval, the median +
150 ms); its length is the whole gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sfu.media.aiortc_bridge import set_ice_host_addresses
from tests.e2e.peer_process import Observed, PeerProcess, loop_lag
from tests.e2e.shaped_link import (
    FPS,
    LAYERS,
    SERVER_ADDRESS,
    SERVER_IF,
    SUBSCRIBER_ADDRESS,
    SUBSCRIBER_IF,
    QdiscStats,
    ServerProcess,
    ShapedLink,
    interface_counters,
    layer_of_width,
    parse_qdisc,
)

K = TypeVar("K")  # what a frame is sorted by: its layer or its width

SAMPLE_INTERVAL = 0.5
TOP = LAYERS[-1][0]
FREEZE_MIN = 0.150


@dataclass(frozen=True, slots=True)
class LinkSample:
    t: float
    rate: int | None  # the limit, bit/s; None: unlimited
    sent: int  # bytes bwe0 transmitted (what passed the limit)
    qdisc: QdiscStats


@dataclass
class ShapedCall:
    link: ShapedLink
    server: ServerProcess
    room: str
    workdir: Path
    publisher: PeerProcess
    subscribers: dict[str, PeerProcess] = field(default_factory=dict)
    samples: list[LinkSample] = field(default_factory=list)
    #: (when, what) of each change to the link, and of the caller's own marks
    marks: list[tuple[float, str]] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)
    #: (t, the longest late wake-up of this process's loop in the 0.5 s before)
    lags: list[tuple[float, float]] = field(default_factory=list)
    _sampler: asyncio.Task[None] | None = None

    @property
    def publisher_id(self) -> str:
        assert self.publisher.seen.participant_id is not None
        return self.publisher.seen.participant_id

    @property
    def track_id(self) -> str:
        """The publisher's video track."""
        assert self.publisher.seen.track_id is not None
        return self.publisher.seen.track_id

    def keyframes_sent(self) -> dict[str, int]:
        """Keyframes the publisher sent per layer so far (its last report)."""
        sent = self.publisher.seen.sent
        return {rid: int(v[1]) for rid, v in sent[-1]["layers"].items()} if sent else {}

    async def subscribe(
        self,
        name: str,
        *,
        shaped: bool,
        loss: float = 0.0,
        seed: int = 1,
        transport_cc: bool = True,
    ) -> PeerProcess:
        """Start a subscriber process behind the link (``shaped``) or beside the server."""
        if shaped:
            prefix = self.link.command(self.link.subscriber_ns)
            args = ["--url", self.server.url(SERVER_ADDRESS), "--ice-host", SUBSCRIBER_ADDRESS]
            args += ["--interface", SUBSCRIBER_IF]
        else:
            prefix = self.link.command(self.link.server_ns)
            args = ["--url", self.server.url(), "--ice-host", "127.0.0.1"]
        args += ["--room", self.room, "--publisher", self.publisher_id]
        args += ["--loss", str(loss), "--seed", str(seed)]
        args += ["--transport-cc", "on" if transport_cc else "off"]
        subscriber = await PeerProcess.start(
            prefix, "tests.e2e.shaped_subscriber", name, args, self.workdir
        )
        self.subscribers[name] = subscriber
        return subscriber

    async def sample(self) -> LinkSample:
        process = await asyncio.create_subprocess_exec(
            "tc", "-n", self.link.server_ns, "-s", "-j", "qdisc", "show", "dev", SERVER_IF,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        output, _ = await process.communicate()
        sent = interface_counters(self.server.pid, SERVER_IF)[2]
        sample = LinkSample(time.monotonic(), self.link.rate, sent, parse_qdisc(output))
        self.samples.append(sample)
        return sample

    async def shape(self, rate: int | None) -> float:
        """Set the limit (None lifts it); returns when, after a sample just before."""
        await self.sample()
        if rate is None:
            self.link.lift()
        else:
            self.link.shape(rate)
        return self.mark("unlimited" if rate is None else f"limit {rate // 1000} kbit/s")

    def mark(self, label: str) -> float:
        now = time.monotonic()
        self.marks.append((now, label))
        return now

    def describe(self) -> str:
        """What each subscriber saw between the marks, for a failure message or a report."""
        now = time.monotonic()
        bounds = [*self.marks, (now, "end")]
        lines = []
        for (since, label), (until, _) in itertools.pairwise(bounds):
            if until - since < 0.05:
                continue  # a mark at the end
            lag = max((v for t, v in self.lags if since <= t <= until + 0.5), default=0.0)
            lines.append(
                f"{label} ({until - since:.1f} s): link loss "
                f"{link_loss(self.samples, since, until):.1%}; loop lag: the test's "
                f"{lag * 1000:.0f} ms, the publisher's "
                f"{max_lag(self.publisher.seen, since, until, 'sent') * 1000:.0f} ms"
            )
            for name, subscriber in self.subscribers.items():
                seen = subscriber.seen
                stalls = freezes(frame_times(seen, since - 1, until), until)
                keyframes = Counter(
                    layer_of_width(w) or "?" for t, w, _ in seen.keyframes if since <= t < until
                )
                lines.append(
                    f"  {name}: frames {dict(sorted(layers(seen, since, until).items()))}, "
                    f"keyframes in {dict(sorted(keyframes.items()))}, "
                    f"{received_bitrate(seen, since, until) / 1000:.0f} kbit/s, "
                    f"{len(stalls)} freezes {sum(g for _, g in stalls):.2f} s, "
                    f"loop lag {max_lag(seen, since, until) * 1000:.0f} ms"
                )
        for name, subscriber in self.subscribers.items():
            kinds = Counter(str(m.get("type")) for _, m in subscriber.seen.messages)
            quality = quality_events(subscriber.seen)
            last = quality[-1][1] if quality else None
            lines.append(f"{name}: messages {dict(kinds)}; last connectionQuality {last}")
        lines.append(f"publisher: keyframes sent per layer {self.keyframes_sent()}")
        return "\n".join(lines)

    def start_sampling(self) -> None:
        self._sampler = asyncio.create_task(self._sampling(), name="link-sampler")

    async def _sampling(self) -> None:
        while True:
            await self.sample()
            lag = await loop_lag(0.05, round(SAMPLE_INTERVAL / 0.05))
            self.lags.append((time.monotonic(), lag))

    async def stop(self) -> None:
        """Stop sampling, every subscriber, then the publisher (their exit codes:
        :attr:`exit_codes`)."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        codes = await asyncio.gather(*(s.stop() for s in self.subscribers.values()))
        self.exit_codes = dict(zip(self.subscribers, codes, strict=True))
        self.exit_codes["publisher"] = await self.publisher.stop()


@contextlib.asynccontextmanager
async def shaped_call(
    workdir: Path,
    room: str = "bwe",
    *,
    loss: float = 0.0,
    seed: int = 1,
    transport_cc: bool = True,
) -> AsyncIterator[ShapedCall]:
    """The call, both subscribers receiving the publisher's video; all torn down after, and
    then every process must have exited cleanly (code 0).

    ``loss``: the shaped subscriber's random loss (see ``shaped_subscriber``);
    ``transport_cc=False``: it sends REMB only (the server's fallback)."""
    async with contextlib.AsyncExitStack() as stack:
        link = stack.enter_context(ShapedLink())
        server = ServerProcess(link, workdir)
        stack.callback(server.stop)
        stack.enter_context(link.entered())
        set_ice_host_addresses(["127.0.0.1"])  # for a test's own clients
        stack.callback(set_ice_host_addresses, [])
        args = ["--url", server.url(), "--room", room, "--ice-host", "127.0.0.1"]
        publisher = await PeerProcess.start(
            link.command(link.server_ns), "tests.e2e.shaped_publisher", "publisher", args, workdir
        )
        call = ShapedCall(link, server, room, workdir, publisher)
        stack.push_async_callback(call.stop)
        await publisher.wait_until(lambda seen: seen.track_id is not None, 30.0, "track published")
        call.start_sampling()
        await call.subscribe("unshaped", shaped=False)
        await call.subscribe("shaped", shaped=True, loss=loss, seed=seed, transport_cc=transport_cc)
        call.mark("start")
        yield call
    failed = {name: code for name, code in call.exit_codes.items() if code != 0}
    if server.process.returncode != 0:
        failed["server"] = server.process.returncode
    peers = {"publisher": call.publisher, **call.subscribers}
    logs = [p.logs() for name, p in peers.items() if name in failed]
    assert not failed, f"exit codes {failed}\n{server.logs()}\n" + "\n".join(logs)


# --- reading the observations ---


def layers(seen: Observed, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
    """Decoded frames per layer (``?`` for a size of no layer) within [since, until)."""
    return Counter(
        layer_of_width(width) or "?" for t, width, _ in seen.frames if since <= t < until
    )


def on_layer(seen: Observed, rid: str, since: float, count: int) -> bool:
    """Whether the last ``count`` frames since ``since`` are all of ``rid``."""
    recent = [w for t, w, _ in seen.frames if t >= since][-count:]
    return len(recent) == count and all(layer_of_width(w) == rid for w in recent)


def settled_at(seen: Observed, since: float, fits: Collection[str]) -> float | None:
    """When the frames since ``since`` turned to layers in ``fits`` for good (None: never)."""
    return final_run_start([(t, layer_of_width(w)) for t, w, _ in seen.frames if t >= since], fits)


def final_run_start(frames: Sequence[tuple[float, K]], kinds: Collection[K]) -> float | None:
    """When the final run of frames of these kinds (layers, widths) began (None: the last frame
    is of another kind, or there is none)."""
    if not frames or frames[-1][1] not in kinds:
        return None
    start = len(frames)
    while start > 0 and frames[start - 1][1] in kinds:
        start -= 1
    return frames[start][0]


def freezes(times: Sequence[float], end: float | None = None) -> list[tuple[float, float]]:
    """(start, length) of each freeze among frames decoded at ``times`` (see the module's
    definition); with ``end``, the time from the last frame to ``end`` counts too: a stream
    that stopped is frozen until it resumes."""
    gaps = [(a, b - a) for a, b in itertools.pairwise(times)]
    median = statistics.median(g for _, g in gaps) if len(gaps) >= 3 else 1 / FPS
    limit = max(3 * median, median + FREEZE_MIN)
    if end is not None and times and end - times[-1] > limit:
        gaps.append((times[-1], end - times[-1]))
    return [(start, gap) for start, gap in gaps if gap > limit]


def starved(freeze: tuple[float, float], subscriber: Observed, publisher: Observed) -> bool:
    """Whether the subscriber's or the publisher's event loop woke up late by at least half
    the freeze while it lasted: that process was starved of CPU (the machine is shared), and
    the gap is its own, not the network's or the server's."""
    start, gap = freeze
    rows = [*subscriber.counters, *publisher.sent]
    return any(start <= r["t"] <= start + gap + 0.5 and r.get("lag", 0) >= gap / 2 for r in rows)


def frame_times(seen: Observed, since: float = 0.0, until: float = float("inf")) -> list[float]:
    return [t for t, _, _ in seen.frames if since <= t < until]


def received_bitrate(seen: Observed, since: float, until: float, key: str = "bytes") -> float:
    """Bit/s the subscriber received within [since, until] (its 0.25 s counters)."""
    inside = [c for c in seen.counters if since <= c["t"] <= until and c.get(key) is not None]
    if len(inside) < 2 or inside[-1]["t"] <= inside[0]["t"]:
        return 0.0
    first, last = inside[0], inside[-1]
    return 8 * float(last[key] - first[key]) / float(last["t"] - first["t"])


def link_loss(samples: Sequence[LinkSample], since: float, until: float) -> float:
    """Fraction of the packets offered to the limited link within [since, until] that its
    queue dropped (counters restart with each new qdisc: a fall is a restart)."""
    inside = [s for s in samples if since <= s.t <= until and s.rate is not None]
    sent = dropped = 0
    for a, b in itertools.pairwise(inside):
        sent += _increase(a.qdisc.packets, b.qdisc.packets)
        dropped += _increase(a.qdisc.drops, b.qdisc.drops)
    return dropped / (sent + dropped) if sent + dropped else 0.0


def _increase(before: int, after: int) -> int:
    return after - before if after >= before else after


def max_lag(seen: Observed, since: float, until: float, reports: str = "counters") -> float:
    """The peer process's longest late wake-up reported within [since, until + 0.5]."""
    rows: list[dict[str, Any]] = getattr(seen, reports)
    lags = (c.get("lag", 0.0) for c in rows if since <= c["t"] <= until + 0.5)
    return float(max(lags, default=0.0))


def quality_events(seen: Observed, since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
    return seen.of_type("connectionQuality", since)
