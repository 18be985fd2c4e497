"""A load run: R rooms x P participants joining over a ramp, a hold of D seconds, then leaving.

Participant ``k`` (of R x P) joins room ``k % R`` at ``k * ramp / (R x P)`` seconds, so rooms fill
side by side; room ``r`` is joined through server URL ``r % len(urls)`` (its node). Every second
the sampler turns the counters into one row of the timeline; the hold window (from the end of the
ramp to the end of the run) is what the report's totals describe.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from loadtest.media import encode_audio, encode_video
from loadtest.participant import LEAVE_TIMEOUT, LoadParticipant, Shared
from loadtest.progress import Display, NullDisplay
from loadtest.server import Scrape, ServerMetrics, cpu_percent, merge
from loadtest.simulcast import (
    LayerSpec,
    clip_info,
    counts_now,
    encode_layers,
    plan_for,
    switches,
)
from loadtest.stats import CpuMeter, GcPauses, LoopLag, MachineCpu, percentiles


@dataclass(frozen=True, slots=True)
class LoadConfig:
    #: the servers (nodes) the rooms are spread over, round robin
    urls: tuple[str, ...]
    rooms: int = 4
    participants: int = 5  # per room
    publishers: int | None = None  # per room; None: every participant publishes
    duration: float = 30.0  # the hold, after the ramp
    ramp: float = 10.0
    width: int = 320
    height: int = 240
    fps: int = 30
    video_bitrate: int = 300_000
    audio_bitrate: int = 32_000
    audio_frame_ms: int = 20
    video: bool = True
    audio: bool = True
    room_prefix: str = "load"
    request_timeout: float = 10.0
    sample_interval: float = 1.0
    #: simulcast: the layers publishers send, small to large (None: one VP8 stream)
    layers: tuple[LayerSpec, ...] | None = None
    #: "best", "spread" (maxLayer round robin by index in the room), "cycle" (spread, then the
    #: next layer every ``switch_every`` seconds) or one maxLayer for all
    subscriber_layers: str | int = "best"
    switch_every: float = 5.0

    @property
    def total(self) -> int:
        return self.rooms * self.participants

    def node_of(self, room: int) -> int:
        """The index in ``urls`` of the server room ``room`` (0 to rooms - 1) is joined through."""
        return room % len(self.urls)

    def publishers_per_room(self) -> int:
        if self.publishers is None:
            return self.participants
        return max(0, min(self.publishers, self.participants))


@dataclass(frozen=True, slots=True)
class NodeCounts:
    """One node's participants' counters at one instant."""

    tx_packets: int  # sent by its publishers
    rx_packets: int  # received by its subscribers
    rx_expected: int
    rx_frames: int


@dataclass
class Snapshot:
    """Counters at one instant (the start or the end of the hold window)."""

    at: float
    tx_packets: int
    rx_packets: int
    rx_expected: int
    rx_bytes: dict[str, int]  # by participant name
    generator_cpu: float
    scrape: Scrape | None  # every node's /metrics summed (None unless all answered)
    nodes: list[NodeCounts] = field(default_factory=list)  # by index in config.urls
    node_scrapes: list[Scrape | None] = field(default_factory=list)


@dataclass
class RunData:
    """Everything the report is made of."""

    config: LoadConfig
    started_at: float  # time.time()
    t0: float  # time.perf_counter() at the start
    participants: list[LoadParticipant]
    timeline: list[dict[str, Any]] = field(default_factory=list)
    hold_latencies: array[float] = field(default_factory=lambda: array("d"))
    #: the hold's latency samples of each node's subscribers, by index in config.urls
    node_latencies: list[array[float]] = field(default_factory=list)
    hold_start: Snapshot | None = None
    hold_end: Snapshot | None = None
    clip_info: dict[str, Any] = field(default_factory=dict)
    server_error: str | None = None
    #: why a node's /metrics could not be read, by index in config.urls
    server_errors: list[str | None] = field(default_factory=list)
    server_after: Scrape | None = None


class LoadRun:
    def __init__(self, config: LoadConfig, display: Display | None = None) -> None:
        self.config = config
        self.display = display or NullDisplay()
        self.cpu = CpuMeter()
        self.machine = MachineCpu()
        self.lag = LoopLag()
        self.gc = GcPauses()
        self._last_totals = (0, 0, 0, 0)  # tx bytes, rx bytes, rx expected, rx packets
        self._last_freezes = 0
        self._last_switches = 0
        self._last_scrape: Scrape | None = None

    async def run(self) -> RunData:
        config = self.config
        encode_started = time.process_time()
        video = (
            encode_video(config.width, config.height, config.fps, 3.0, config.video_bitrate)
            if config.video and config.layers is None
            else None
        )
        layers = (
            encode_layers(config.layers, config.fps) if config.video and config.layers else None
        )
        audio = (
            encode_audio(2.0, config.audio_bitrate, frame_ms=config.audio_frame_ms)
            if config.audio
            else None
        )
        shared = Shared(config.urls, video, audio, config.request_timeout, layers)
        participants = self._participants(shared)
        data = RunData(config, time.time(), time.perf_counter(), participants)
        data.node_latencies = [array("d") for _ in config.urls]
        data.clip_info = {
            "encode_cpu_s": round(time.process_time() - encode_started, 3),
            "video_kbps": round(video.bitrate / 1000, 1) if video else None,
            "audio_kbps": round(audio.bitrate / 1000, 1) if audio else None,
        }
        if layers is not None and config.layers is not None:
            data.clip_info["video_layers"] = clip_info(config.layers, layers)
        async with aiohttp.ClientSession() as http:
            servers = [ServerMetrics(http, url) for url in config.urls]
            await self._drive(data, shared, servers)
            data.server_errors = [None if s.available else s.error for s in servers]
            data.server_error = "; ".join(e for e in data.server_errors if e) or None
        return data

    def _participants(self, shared: Shared) -> list[LoadParticipant]:
        config = self.config
        run_id = secrets.token_hex(3)
        publishers = config.publishers_per_room()
        count = len(config.layers) if config.layers else 1
        result = []
        for k in range(config.total):
            room, index = k % config.rooms, k // config.rooms
            name = f"{config.room_prefix}-{room}-{index}"
            room_id = f"{config.room_prefix}-{run_id}-{room}"
            plan = (
                plan_for(config.subscriber_layers, index, count, config.switch_every)
                if config.layers
                else None
            )
            participant = LoadParticipant(
                shared, room_id, name, index < publishers, plan, node=config.node_of(room)
            )
            result.append(participant)
        return result

    async def _drive(self, data: RunData, shared: Shared, servers: Sequence[ServerMetrics]) -> None:
        config = self.config
        stop = asyncio.Event()
        spacing = config.ramp / config.total if config.total else 0.0
        tasks = [
            asyncio.create_task(self._start_later(p, data.t0 + k * spacing, stop))
            for k, p in enumerate(data.participants)
        ]
        self._last_scrape = merge(await scrape_all(servers, time.perf_counter()))
        hold_at = data.t0 + config.ramp
        end_at = hold_at + config.duration
        self.display.start(config, end_at - data.t0)
        next_tick = data.t0 + config.sample_interval
        self.lag.start()
        self.gc.start()
        try:
            while True:
                await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
                now = time.perf_counter()
                holding = data.hold_start is not None
                scrapes = await scrape_all(servers, now)
                scrape = merge(scrapes)
                row = self._sample(data, shared, now, scrape, holding)
                data.timeline.append(row)
                self.display.update(row, data.participants)
                if not holding and now >= hold_at:
                    data.hold_start = self._snapshot(data, now, scrapes)
                if now >= end_at:
                    break
                next_tick += config.sample_interval
            data.hold_end = self._snapshot(data, now, scrapes)
            for participant in data.participants:
                for stream in participant.streams.values():
                    stream.close(now)
        finally:
            self.lag.stop()
            self.gc.stop()
            self.display.phase("leaving")
            stop.set()
            await asyncio.wait(tasks, timeout=LEAVE_TIMEOUT + 5.0)
            for task in tasks:
                task.cancel()
            self.display.stop()
        await asyncio.sleep(0.5)  # let the server notice who left
        data.server_after = merge(await scrape_all(servers, time.perf_counter()))

    async def _start_later(
        self, participant: LoadParticipant, at: float, stop: asyncio.Event
    ) -> None:
        delay = at - time.perf_counter()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return  # stopped before its turn
            except TimeoutError:
                pass
        await participant.run(stop)

    def _snapshot(self, data: RunData, now: float, scrapes: list[Scrape | None]) -> Snapshot:
        streams = [s for p in data.participants for s in p.streams.values()]
        nodes = [
            NodeCounts(
                tx_packets=sum(p.tx_packets for p in node),
                rx_packets=sum(s.packets for p in node for s in p.streams.values()),
                rx_expected=sum(s.expected for p in node for s in p.streams.values()),
                rx_frames=sum(s.frames for p in node for s in p.streams.values()),
            )
            for node in by_node(data.participants, len(self.config.urls))
        ]
        return Snapshot(
            at=now,
            tx_packets=sum(p.tx_packets for p in data.participants),
            rx_packets=sum(s.packets for s in streams),
            rx_expected=sum(s.expected for s in streams),
            rx_bytes={p.name: p.rx_bytes for p in data.participants},
            generator_cpu=self.cpu.total_seconds(),
            scrape=merge(scrapes),
            nodes=nodes,
            node_scrapes=scrapes,
        )

    def _sample(
        self, data: RunData, shared: Shared, now: float, scrape: Scrape | None, holding: bool
    ) -> dict[str, Any]:
        participants = data.participants
        streams = [s for p in participants for s in p.streams.values()]
        totals = (
            sum(p.tx_bytes for p in participants),
            sum(p.rx_bytes for p in participants),
            sum(s.expected for s in streams),
            sum(s.packets for s in streams),
        )
        last, self._last_totals = self._last_totals, totals
        freezes = sum(s.freezes for s in streams)
        new_freezes, self._last_freezes = freezes - self._last_freezes, freezes
        switched = switches(streams)
        new_switches, self._last_switches = switched - self._last_switches, switched
        interval = self.config.sample_interval
        expected, received = totals[2] - last[2], totals[3] - last[3]
        latencies = array("d")
        for p in participants:
            taken, p.latencies = p.latencies, array("d")
            latencies.extend(taken)
            if holding:
                data.node_latencies[p.node].extend(taken)
        if holding:
            data.hold_latencies.extend(latencies)
        shared.book.rotate(now)
        receivers = [p for p in participants if p.streams]
        states = [p.state for p in participants]
        server_cpu = cpu_percent(self._last_scrape, scrape)
        if scrape is not None:
            self._last_scrape = scrape
        rx_kbps = (totals[1] - last[1]) * 8 / interval / 1000
        machine = self.machine.percent()
        p50, p95, p99 = percentiles(latencies, (50, 95, 99))
        gc_seconds, _ = self.gc.take()
        return {
            "t": round(now - data.t0, 2),
            "phase": "hold" if holding else "ramp",
            "joined": sum(s in ("joined", "connected") for s in states),
            "connected": states.count("connected"),
            "failed": states.count("failed"),
            "tx_kbps": round((totals[0] - last[0]) * 8 / interval / 1000, 1),
            "rx_kbps": round(rx_kbps, 1),
            "rx_kbps_per_subscriber": round(rx_kbps / len(receivers), 1) if receivers else 0.0,
            "loss_percent": round(100.0 * max(0, expected - received) / expected, 3)
            if expected > 0
            else 0.0,
            "latency_p50_ms": _ms(p50),
            "latency_p95_ms": _ms(p95),
            "latency_p99_ms": _ms(p99),
            "freezes": new_freezes,  # video gaps > FREEZE_GAP that ended in this second
            # video streams by the layer (keyframe size) they got a frame of in this second
            "video_layers": counts_now(streams, now, interval),
            "layer_switches": new_switches,  # keyframes of another size than the last one
            "generator_cpu_percent": round(self.cpu.percent(), 1),
            "generator_loop_lag_ms": round(self.lag.take() * 1000, 1),
            "generator_gc_ms": round(gc_seconds * 1000, 1),
            "machine_cpu_percent": round(machine, 1) if machine is not None else None,
            "server_cpu_percent": round(server_cpu, 1) if server_cpu is not None else None,
            "server_rss_mb": round(scrape.get("process_resident_memory_bytes") / 1e6, 1)
            if scrape is not None and "process_resident_memory_bytes" in scrape.samples
            else None,
        }


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 3) if seconds is not None else None


def by_node(participants: Sequence[LoadParticipant], nodes: int) -> list[list[LoadParticipant]]:
    """The participants of each node (index in config.urls)."""
    result: list[list[LoadParticipant]] = [[] for _ in range(nodes)]
    for p in participants:
        result[p.node].append(p)
    return result


async def scrape_all(servers: Sequence[ServerMetrics], at: float) -> list[Scrape | None]:
    return list(await asyncio.gather(*(s.scrape(at) for s in servers)))
