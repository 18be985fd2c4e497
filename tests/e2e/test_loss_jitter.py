"""5 % loss and 50 ms jitter on one subscriber's link, both ways (issue 11), real peers.

::

    namespace <tag>-sfu                         <tag>-sub-imp         namespace <tag>-sub
    the server, the publisher, the clean        the bridge            the impaired subscriber
    subscriber on 127.0.0.1;                    (benchmarks/          imp1 10.99.0.2
    imp0 10.99.0.1  <------- veth ------->      impair.py)  <- veth ->

The publisher (``shaped_publisher``: 160x90 / 320x180 / 640x360 VP8 simulcast of a scrolling
noisy texture, 20 fps, real inter frames) and the clean subscriber talk over lo. Everything
the impaired subscriber sends and receives, signaling included, crosses the userspace bridge
(``benchmarks/impair.py``): 5 % of frames lost each way at random (seeded), and each frame
delayed by 50 ms +- 50 ms (uniform) each way, in order — a frame never overtakes the one ahead,
so the spread mostly adds delay (round trip ~100-200 ms).

Over WINDOW seconds of call — from when both subscribers show the top layer (the impaired one
if its estimate gets there within READY_TIMEOUT; its start-up, layer moves and freezes, is
reported apart) — the test measures, for each subscriber: decoded frames per second,
frozen time (``shaped_call``'s freeze: a gap between decoded frames over max(3 x the median
interval, median + 150 ms)), NACK and PLI messages it sent and retransmissions it received, the
playout delay its client settled at (``sfu_client.playout``: median over the window and at its
end); the publisher's keyframes; the server's NACK/PLI/retransmission totals. It asserts
outcomes: both keep decoding, the clean one never freezes and keeps the top layer, the impaired
one's NACKs were answered, and the publisher's keyframes stay within what the server's keyframe
throttle (``MediaConfig.keyframe_min_interval``) lets through. Issue 11's target (frozen < 1 %
for the impaired subscriber, 0 for the others) is printed (``pytest -s``), not asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.impair import Impairment
from benchmarks.impair_link import RIGHT_IF, ImpairedLink
from sfu.config import MediaConfig
from tests.e2e.peer_process import Observed, PeerProcess
from tests.e2e.shaped_call import TOP, frame_times, freezes, on_layer, starved
from tests.e2e.shaped_link import (
    CLIP_SECONDS,
    FPS,
    LAYERS,
    NICE,
    SERVER_ADDRESS,
    LinkUnavailable,
    ServerProcess,
    check_available,
    in_namespace,
    layer_of_width,
)

pytestmark = pytest.mark.e2e

DELAY, JITTER, LOSS = 0.050, 0.050, 0.05
IMPAIRMENT = Impairment(loss=LOSS, delay=DELAY, jitter=JITTER)  # uniform, no reordering
SEED = 11
WINDOW = 30.0
SLICE = 5.0  # the impaired subscriber decodes something in every slice of the window
READY_TIMEOUT = 30.0
READY_FRAMES = 20  # 1 s of frames in a row
ROOM = "lossy"


@dataclass(frozen=True)
class Site:
    """The server's namespace, for ``ServerProcess``; every process at priority NICE."""

    server_ns: str

    def command(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, "nice", "-n", str(NICE), *argv]


async def scrape(server: ServerProcess) -> dict[str, float]:
    """The server's counters: ``name`` or ``name{label}`` (one label) -> value."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.url() + "/metrics") as response,
    ):
        text = await response.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = ",".join(f"{v}" for v in sample.labels.values())
            values[f"{sample.name}{{{label}}}" if label else sample.name] = sample.value
    return values


def keyframes_sent(publisher: Observed) -> dict[str, int]:
    sent = publisher.sent
    return {rid: int(v[1]) for rid, v in sent[-1]["layers"].items()} if sent else {}


def last_counters(seen: Observed, until: float) -> Mapping[str, Any]:
    rows = [c for c in seen.counters if c["t"] <= until]
    return rows[-1] if rows else {}


@dataclass(frozen=True)
class Numbers:
    frames: int
    fps: float
    frozen: float  # seconds
    freezes: int
    layers: dict[str, int]
    nacks: int
    plis: int
    rtx: int
    keyframes: int  # that arrived
    playout: str  # the playout delay over the window

    def line(self, name: str) -> str:
        return (
            f"{name}: {self.fps:.1f} fps decoded ({self.frames} frames, layers "
            f"{self.layers}), frozen {self.frozen:.2f} s = {self.frozen / WINDOW:.2%} "
            f"in {self.freezes} freezes; sent {self.nacks} NACKs, {self.plis} PLIs; "
            f"received {self.rtx} retransmissions, {self.keyframes} keyframes; {self.playout}"
        )


def playout(seen: Observed, start: float, end: float) -> str:
    """The playout delay (its median over the window's reports, and at the end) and the frames
    that came after their render time or were dropped as too late within the window."""
    rows = [c["playout"] for c in seen.counters if start <= c["t"] <= end and c.get("playout")]
    if not rows:
        return "no playout delay"
    delays = sorted(float(r["delay"]) for r in rows)
    first, last = rows[0], rows[-1]
    return (
        f"playout delay median {delays[len(delays) // 2] * 1000:.0f} ms, at the end "
        f"{float(last['delay']) * 1000:.0f} ms (target {float(last['target']) * 1000:.0f} ms), "
        f"{last['late'] - first['late']} frames late, {last['dropped'] - first['dropped']} "
        f"dropped, {last['reanchors'] - first['reanchors']} re-anchors"
    )


def describe_freezes(seen: Observed, start: float, end: float, waits: ServerWaits) -> str:
    """Each freeze: when (s into the window), how long, the layers either side, whether a
    keyframe arrived and how many retransmissions within it."""
    width = {round(t, 6): w for t, w, _ in seen.frames}
    parts = []
    for at, gap in freezes(frame_times(seen, start - 1, end), end):
        before, after = width.get(round(at, 6)), width.get(round(at + gap, 6))
        rtx = [c["rtx"] for c in seen.counters if at <= c["t"] <= at + gap + 0.25]
        keyframe = any(at <= t <= at + gap for t, _, _ in seen.keyframes)
        parts.append(
            f"{at - start:.1f}s +{gap * 1000:.0f}ms {layer_of_width(before or 0)}->"
            f"{layer_of_width(after or 0)}{' keyframe' if keyframe else ''}"
            f"{f' rtx+{rtx[-1] - rtx[0]}' if len(rtx) > 1 else ''}"
            f" (server waited for CPU {waits.waited(at, at + gap) * 1000:.0f}ms)"
        )
    return "; ".join(parts) or "none"


def describe_start(seen: Observed, start: float, waits: ServerWaits) -> str:
    """From the first decoded frame to the window: how long, the freezes in it."""
    if not seen.frames:
        return "no frame"
    first = seen.frames[0][0]
    stalls = freezes(frame_times(seen, first, start), start)
    frozen = sum(gap for _, gap in stalls)
    layers = [layer_of_width(w) for t, w, _ in seen.frames if t < start]
    path = [rid for i, rid in enumerate(layers) if i == 0 or rid != layers[i - 1]]
    return (
        f"{start - first:.1f} s from the first frame to the window, "
        f"layers {'->'.join(map(str, path))}, "
        f"frozen {frozen:.2f} s in {len(stalls)} freezes"
        + (
            f" ({describe_freezes(seen, first, start, waits)}, times from the first frame)"
            if stalls
            else ""
        )
    )


def estimates(seen: Observed, start: float) -> str:
    values = sorted(
        float(m["estimateBps"]) / 1e6
        for _, m in seen.of_type("connectionQuality", start)
        if isinstance(m.get("estimateBps"), int | float)
    )
    if not values:
        return "no estimate"
    return (
        f"estimate {values[0]:.2f}..{values[-1]:.2f} Mbit/s (median {values[len(values) // 2]:.2f})"
    )


def measure(seen: Observed, start: float, end: float) -> Numbers:
    times = frame_times(seen, start, end)
    stalls = freezes(frame_times(seen, start - 1, end), end)
    before, after = last_counters(seen, start), last_counters(seen, end)

    def delta(key: str) -> int:
        return int(after.get(key, 0)) - int(before.get(key, 0))

    return Numbers(
        frames=len(times),
        fps=len(times) / (end - start),
        frozen=round(sum(g for _, g in stalls), 3),
        freezes=len(stalls),
        layers=dict(
            Counter(layer_of_width(w) or "?" for t, w, _ in seen.frames if start <= t < end)
        ),
        nacks=delta("nacks"),
        plis=delta("plis"),
        rtx=delta("rtx"),
        keyframes=sum(start <= t < end for t, _, _ in seen.keyframes),
        playout=playout(seen, start, end),
    )


class ServerWaits:
    """The server's event-loop thread's time spent runnable but not running (the kernel's
    run-queue wait, ``/proc/PID/schedstat``), sampled every 50 ms: a freeze during which the
    server waited for a CPU that long is the shared machine's, not the server's or the
    network's (it has no loop-lag report of its own, as the peers do)."""

    def __init__(self, pid: int) -> None:
        self._path = Path(f"/proc/{pid}/schedstat")
        self.samples: list[tuple[float, float]] = []  # (t, seconds waited so far)
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            waited = int(self._path.read_text().split()[1]) / 1e9
            self.samples.append((time.monotonic(), waited))
            await asyncio.sleep(0.05)

    def waited(self, since: float, until: float) -> float:
        inside = [w for t, w in self.samples if since - 0.05 <= t <= until + 0.05]
        return inside[-1] - inside[0] if len(inside) > 1 else 0.0

    def starved(self, freeze: tuple[float, float]) -> bool:
        start, gap = freeze
        return self.waited(start, start + gap) >= gap / 2

    def stop(self) -> None:
        self._task.cancel()


async def start_peer(
    site: Site, ns: str, module: str, name: str, args: list[str], workdir: Path
) -> PeerProcess:
    return await PeerProcess.start(site.command(ns), module, name, args, workdir)


async def test_a_subscriber_behind_loss_and_jitter_keeps_decoding_and_costs_others_nothing(
    tmp_path: Path,
) -> None:
    try:
        check_available()
    except LinkUnavailable as exc:
        pytest.fail(f"cannot run the impaired-link test: {exc}", pytrace=False)
    tag = f"lj{os.getpid()}"
    site = Site(f"{tag}-sfu")
    sub_ns = f"{tag}-sub"
    peers: dict[str, PeerProcess] = {}
    codes: dict[str, int] = {}
    with ImpairedLink(site.server_ns, sub_ns, IMPAIRMENT, IMPAIRMENT, seed=SEED) as link:
        assert link.left_address == SERVER_ADDRESS  # the server gathers candidates there
        server = ServerProcess(site, tmp_path)
        try:
            with in_namespace(site.server_ns, NICE):  # this thread: /metrics on 127.0.0.1
                try:
                    await _call(link, server, site, sub_ns, peers, tmp_path)
                finally:
                    for name in ("impaired", "clean", "publisher"):
                        if name in peers:
                            codes[name] = await peers[name].stop()
        finally:
            codes["server"] = server.stop()
    failed = {name: code for name, code in codes.items() if code != 0}
    logs = "\n".join(peers[name].logs() for name in failed if name in peers)
    assert not failed, f"exit codes {failed}\n{server.logs()}\n{logs}"


async def _call(
    link: ImpairedLink,
    server: ServerProcess,
    site: Site,
    sub_ns: str,
    peers: dict[str, PeerProcess],
    workdir: Path,
) -> None:
    common = ["--room", ROOM]
    peers["publisher"] = publisher = await start_peer(
        site, site.server_ns, "tests.e2e.shaped_publisher", "publisher",
        [*common, "--url", server.url(), "--ice-host", "127.0.0.1"], workdir,
    )  # fmt: skip
    await publisher.wait_until(lambda seen: seen.track_id is not None, 30.0, "track published")
    assert publisher.seen.participant_id is not None
    common += ["--publisher", publisher.seen.participant_id]
    peers["clean"] = await start_peer(
        site, site.server_ns, "tests.e2e.shaped_subscriber", "clean",
        [*common, "--url", server.url(), "--ice-host", "127.0.0.1"], workdir,
    )  # fmt: skip
    peers["impaired"] = await start_peer(
        site, sub_ns, "tests.e2e.shaped_subscriber", "impaired",
        [*common, "--url", server.url(link.left_address), "--ice-host", link.right_address,
         "--interface", RIGHT_IF], workdir,
    )  # fmt: skip
    waits = ServerWaits(server.pid)
    try:
        await _measure(link, server, peers, waits, workdir)
    finally:
        waits.stop()


async def _measure(
    link: ImpairedLink,
    server: ServerProcess,
    peers: dict[str, PeerProcess],
    waits: ServerWaits,
    workdir: Path,
) -> None:
    publisher, clean, impaired = peers["publisher"], peers["clean"], peers["impaired"]
    # the clean one past its first probes, on the top layer; the impaired one decoding
    await clean.wait_until(
        lambda seen: on_layer(seen, TOP, 0.0, READY_FRAMES), READY_TIMEOUT, "top-layer frames"
    )
    await impaired.wait_until(
        lambda seen: len(seen.frames) >= READY_FRAMES, READY_TIMEOUT, "decoded frames"
    )
    # and on the top layer too, if its estimate gets there in time (it ramps up under loss more
    # slowly): the window measures the call, the start-up's layer moves are reported apart
    with contextlib.suppress(AssertionError):
        await impaired.wait_until(
            lambda seen: on_layer(seen, TOP, 0.0, READY_FRAMES), READY_TIMEOUT, "top-layer frames"
        )

    # the publisher reports every 0.5 s: its counts lag both ends of the window alike
    start = time.monotonic()
    metrics_before, link_before = await scrape(server), link.counters()
    keyframes_before = keyframes_sent(publisher.seen)
    await asyncio.sleep(WINDOW)
    end = time.monotonic()
    metrics_after, link_after = await scrape(server), link.counters()
    keyframes = {
        rid: n - keyframes_before.get(rid, 0) for rid, n in keyframes_sent(publisher.seen).items()
    }

    numbers = {name: measure(peers[name].seen, start, end) for name in ("clean", "impaired")}
    server_delta = {
        key: round(metrics_after[key] - metrics_before.get(key, 0.0))
        for key in sorted(metrics_after)
        if any(
            k in key
            for k in ("nacks", "retransmissions", "plis", "keyframe_requests", "pace", "grades")
        )
    }
    lines = [f"\n{WINDOW:.0f} s, impaired link: {IMPAIRMENT.describe()} each way, seed {SEED}"]
    for direction in ("forward", "backward"):
        a, b = link_before[direction], link_after[direction]
        forwarded = b.forwarded - a.forwarded
        mean = (b.delay_total - a.delay_total) / forwarded if forwarded else 0.0
        lines.append(
            f"  link {direction} ({'to' if direction == 'forward' else 'from'} the subscriber): "
            f"{b.received - a.received} frames, {b.lost - a.lost} lost, delay mean "
            f"{mean * 1000:.0f} ms, max so far {b.delay_max * 1000:.0f} ms (the bridge's own "
            f"lateness at most {b.late_max * 1000:.0f} ms)"
        )
    lines.append(f"impaired start-up: {describe_start(impaired.seen, start, waits)}")
    for name in ("impaired", "clean"):
        seen = peers[name].seen
        lines.append(numbers[name].line(name))
        lines.append(
            f"  freezes: {describe_freezes(seen, start, end, waits)}; {estimates(seen, start)}"
        )
    lines.append(f"publisher: keyframes sent per layer in the window {keyframes}")
    lines.append(f"server: {server_delta}")
    raw = workdir / "observed.json"  # every frame, keyframe, counter and message, to dig into
    raw.write_text(
        json.dumps({"start": start, "end": end, **{n: asdict(p.seen) for n, p in peers.items()}})
    )
    lines.append(f"raw observations: {raw}")
    report = "\n".join(lines)
    print(report)

    # both clients played their video out (the SDK's default) and said with what delay
    for name in ("impaired", "clean"):
        assert any(c.get("playout") for c in peers[name].seen.counters), f"{name}\n{report}"
    # the impairment was there and the repair ran
    lost = [link_after[d].lost - link_before[d].lost for d in ("forward", "backward")]
    assert min(lost) > 0, report
    hurt, fine = numbers["impaired"], numbers["clean"]
    assert hurt.nacks > 0 and hurt.rtx > 0, f"no NACK answered\n{report}"
    # the impaired subscriber keeps decoding: frames in every slice, most of the clean one's
    frames = frame_times(impaired.seen, start, end)
    empty = [
        round(t0 - start)
        for t0 in (start + i * SLICE for i in range(math.ceil(WINDOW / SLICE)))
        if not any(t0 <= t < t0 + SLICE for t in frames)
    ]
    assert not empty, f"the impaired subscriber decoded nothing from {empty} s\n{report}"
    assert hurt.frames >= fine.frames / 2, f"the impaired subscriber mostly frozen\n{report}"
    # the clean subscriber: the top layer, no freeze its own process did not cause
    assert set(fine.layers) == {TOP}, report
    stalls = freezes(frame_times(clean.seen, start - 1, end), end)
    caused = [
        f for f in stalls if not starved(f, clean.seen, publisher.seen) and not waits.starved(f)
    ]
    assert not caused, f"the clean subscriber froze: {caused}\n{report}"
    assert fine.fps >= FPS / 2, report
    # the publisher's keyframes: its clip's own (a loop every CLIP_SECONDS) plus at most what
    # the server's throttle lets through, one request per keyframe_min_interval per layer
    interval = MediaConfig().keyframe_min_interval
    bound = math.ceil(WINDOW / CLIP_SECONDS) + 1 + math.floor(WINDOW / interval) + 1
    assert keyframes and all(n <= bound for n in keyframes.values()), f"bound {bound}\n{report}"
    assert set(keyframes) == {rid for rid, *_ in LAYERS}, report
