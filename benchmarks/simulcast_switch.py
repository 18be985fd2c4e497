"""Simulcast layer switches, Chromium → SFU → Chromium, aiosfu and Janus VideoRoom in one run.

    .venv/bin/python -m benchmarks.simulcast_switch [--switches 24] [--interval 5] [--fps 30] \\
        [--sfu aiosfu|janus|both] [--rounds 2] [--nice -5]

A Chromium publisher sends its fake camera at 1280x720 as three VP8 encodings (320x180,
640x360, 1280x720); a Chromium subscriber plays what the SFU forwards. Every ``--interval``
seconds the harness asks for another layer, in the cycle 0, 1, 2, 1, 0, 2 (smallest = 0)
starting from the top layer, so each cycle has every ordered pair of layers once. The switches
are split over ``--rounds`` (a fresh SFU and Chromium each), the SFUs alternating A B, B A, so
that a machine whose load drifts weighs on both alike. Per switch:

- **switch time**: request → first presented frame of the new layer's width (the subscriber's
  ``requestVideoFrameCallback``, its ``presentationTime``); also → that frame's last packet
  received (the callback's ``receiveTime``) and → the first ``getStats()`` report (polled every
  10 ms; Chromium serves a cached report for 50 ms) whose inbound-rtp ``frameWidth`` is the new
  width;
- **third-layer frames**: frames of a width neither the old nor the new layer's, presented
  (``requestVideoFrameCallback``) or seen by ``getStats()``, from the request to the next one;
- **keyframe requests** the publisher received per rid (outbound-rtp ``pliCount``, ``firCount``)
  and keyframes it encoded per rid, from the request to the next one;
- **freezes**: the subscriber's inbound-rtp ``freezeCount`` / ``totalFreezesDuration``, and the
  longest time between presented frames around each switch; both also for ``--baseline``
  seconds of the top layer without switching, before the switches.

The request is timed where it leaves for the SFU: against aiosfu in the subscriber page, just
before ``setTrackSettings`` (sfu-client.js); against Janus in this process, just before the
``configure`` request (``substream``) goes out on Janus's WebSocket. Page clocks are mapped to
this process's wall clock by round trips (error ≤ half the shortest, ~1 ms). aiosfu runs with
``--log-level debug`` by default: its "track settings", "down-track target", "keyframe
requested" and "down-track switched layer" lines (a few per switch) split the switch time at
the server. The Janus room is created with ``fir_freq = 0`` (no periodic keyframe requests,
as aiosfu); aiosfu's publisher page ignores ``publisherLayers`` (all three layers encoded
throughout, as with Janus).

Everything runs in a network namespace of its own (lo + a veth with 127.0.0.2, as
``benchmarks/forwarding.py``), entered by this process so that Chromium starts inside it. Needs
root, Chromium (/usr/bin/chromium) and, for Janus, ``apt-get install -y janus``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from benchmarks import simulcast_pages as pages
from benchmarks.janus import ADMIN_KEY, JanusSession
from benchmarks.processes import (
    REPO,
    Network,
    Process,
    busy_cpu_seconds,
    cpu_seconds,
    janus_version,
    namespace,
    start_janus,
)
from benchmarks.simulcast_analysis import (
    WIDTHS,
    analyse_switch,
    longest_gaps,
    progress,
    server_timeline,
    summarize,
    summary_table,
)

CHROMIUM = Path(os.environ.get("AIOSFU_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    # (the fake camera's frame rate is given with this flag below: it captures 20 fps otherwise)
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--no-pings",
    "--metrics-recording-only",
]
DEFAULT_JANUS_CONFIGS = REPO.parent / "shared" / "testbed" / "janus"
RESULTS = REPO / "benchmarks" / "results"
CYCLE = (0, 1, 2, 1, 0, 2)  # from the top layer: 2→0, 0→1, 1→2, 2→1, 1→0, 0→2
SETUP_TIMEOUT = 45.0
WARMUP = 3.0
JANUS_ROOM = 4321
LISTENING = re.compile(r"aiosfu listening on (http://[^\s]+)")
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True, slots=True)
class Options:
    switches: int
    interval: float
    fps: int
    sfus: tuple[str, ...]
    server_log: str
    janus_fir_freq: int
    janus_configs: Path
    baseline: float
    rounds: int
    server_module: str
    raw: bool
    out: Path
    logs: Path | None
    nice: int


# --- the SFUs ---


class Harness:
    """One SFU with a publisher and a subscriber page connected through it."""

    name = ""
    camera: dict[str, Any] = {}  # the publisher's getSettings(), set by connect

    async def connect(self, publisher: Page, subscriber: Page, fps: int) -> None:
        raise NotImplementedError

    async def request(self, layer: int) -> float:
        """Ask for ``layer``; returns when the request left, wall-clock ms."""
        raise NotImplementedError

    async def close(self) -> None:
        pass


class AiosfuHarness(Harness):
    name = "aiosfu"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.subscriber: Page | None = None
        self.offset = 0.0  # the subscriber page's clock -> wall clock

    async def connect(self, publisher: Page, subscriber: Page, fps: int) -> None:
        room = f"switch-{secrets.token_hex(4)}"
        await publisher.goto(self.base_url + "/")
        self.camera = await pages.open_camera(publisher, 1280, 720, fps)
        await pages.aiosfu_publish(publisher, room)
        await subscriber.goto(self.base_url + "/")
        await pages.aiosfu_subscribe(subscriber, room)
        self.subscriber = subscriber

    async def request(self, layer: int) -> float:
        assert self.subscriber is not None
        return await pages.aiosfu_request(self.subscriber, layer) + self.offset


class JanusHarness(Harness):
    name = "janus"

    def __init__(self, ws_url: str, page_url: str, fir_freq: int) -> None:
        self.ws_url, self.page_url, self.fir_freq = ws_url, page_url, fir_freq
        self.session: JanusSession | None = None
        self.subscriber_handle = 0

    async def connect(self, publisher: Page, subscriber: Page, fps: int) -> None:
        session = self.session = await JanusSession.connect(self.ws_url)
        handle = await session.attach()
        await session.message(
            handle,
            {
                "request": "create",
                "room": JANUS_ROOM,
                "admin_key": ADMIN_KEY,
                "publishers": 2,
                "videocodec": "vp8",
                "fir_freq": self.fir_freq,  # 0: no periodic keyframe requests, as aiosfu
                "is_private": True,
            },
        )
        joined, _ = await session.message(
            handle, {"request": "join", "ptype": "publisher", "room": JANUS_ROOM, "display": "pub"}
        )
        await publisher.goto(self.page_url)
        self.camera = await pages.open_camera(publisher, 1280, 720, fps)
        offer = await pages.janus_offer(publisher)
        _, answer = await session.message(
            handle, {"request": "publish", "audio": False, "video": True}, _jsep("offer", offer)
        )
        if answer is None:
            raise RuntimeError("Janus answered publish without SDP")
        await pages.set_answer(publisher, answer["sdp"])
        await session.trickle_done(handle)
        await session.wait_event(handle, "webrtcup")

        self.subscriber_handle = sub = await session.attach()
        join = {"request": "join", "ptype": "subscriber", "room": JANUS_ROOM}
        _, offer_jsep = await session.message(sub, {**join, "streams": [{"feed": joined["id"]}]})
        if offer_jsep is None:
            raise RuntimeError("Janus sent no offer to the subscriber")
        await subscriber.goto(self.page_url)
        answer_sdp = await pages.janus_answer(subscriber, offer_jsep["sdp"])
        await session.message(sub, {"request": "start"}, _jsep("answer", answer_sdp))
        await session.trickle_done(sub)
        await session.wait_event(sub, "webrtcup")

    async def request(self, layer: int) -> float:
        assert self.session is not None
        at = time.time() * 1000
        await self.session.message(
            self.subscriber_handle, {"request": "configure", "substream": layer}
        )
        return at

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def _jsep(kind: str, sdp: str) -> dict[str, str]:
    return {"type": kind, "sdp": sdp}


@contextlib.asynccontextmanager
async def blank_page_server() -> AsyncIterator[str]:
    """An HTTP origin for the Janus pages (getUserMedia needs a secure context; 127.0.0.1 is)."""
    app = web.Application()

    async def blank(request: web.Request) -> web.Response:
        html = "<!doctype html><title>simulcast switch</title><body></body>"
        return web.Response(text=html, content_type="text/html")

    app.router.add_get("/", blank)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


def start_aiosfu(workdir: Path, log_level: str, name: str, module: str) -> tuple[Process, str]:
    argv = [sys.executable, "-m", module, "serve", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--ice-host", "127.0.0.1", "--log-level", log_level, "--log-format", "json"]
    argv += ["--workers", "1"]  # its CPU is read from the one server pid
    server = Process(name, argv, workdir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = LISTENING.search(server.stdout_path.read_text(errors="replace"))
        if match:
            return server, match.group(1)
        if not server.alive():
            break
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"aiosfu did not start\n{server.logs()}")


# --- one SFU's run ---


async def wait_until(what: str, check: Any, timeout: float = SETUP_TIMEOUT) -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        await asyncio.sleep(0.25)


async def new_page(browser: Browser, log: list[str], name: str) -> Page:
    context = await browser.new_context(viewport={"width": 960, "height": 600})
    page = await context.new_page()
    page.on("console", lambda m: log.append(f"{name} {m.type}: {m.text}"))
    page.on("pageerror", lambda e: log.append(f"{name} pageerror: {e}"))
    return page


async def run_sfu(
    harness: Harness, options: Options, server_pid: int, switches: int
) -> dict[str, Any]:
    console: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*CHROMIUM_FLAGS, f"--use-fake-device-for-media-stream=fps={options.fps}"],
            headless=True,
        )
        try:
            publisher = await new_page(browser, console, "publisher")
            subscriber = await new_page(browser, console, "subscriber")
            try:
                return await _measure(harness, options, server_pid, publisher, subscriber, switches)
            except Exception:
                print("\n".join(console[-40:]), file=sys.stderr)
                raise
        finally:
            await harness.close()
            await browser.close()


async def _measure(
    harness: Harness,
    options: Options,
    server_pid: int,
    publisher: Page,
    subscriber: Page,
    count: int,
) -> dict[str, Any]:
    started = time.time()
    load_before = os.getloadavg()
    await harness.connect(publisher, subscriber, options.fps)

    async def all_layers() -> dict[str, Any] | None:
        snapshot = await pages.publisher_snapshot(publisher)
        widths = sorted(v["width"] for v in snapshot.values())
        return snapshot if widths == list(WIDTHS) else None

    await pages.keep_resolution(publisher)
    layers = await wait_until("the publisher never sent all three layers", all_layers)
    rid_of = {v["width"]: rid for rid, v in layers.items()}

    async def top_layer() -> bool:
        return bool((await pages.subscriber_snapshot(subscriber)).get("width") == WIDTHS[2])

    await wait_until("the subscriber never got the 1280x720 layer", top_layer)
    await pages.start_probes(publisher, subscriber)
    await asyncio.sleep(WARMUP)
    offsets = {
        "publisher": await pages.page_clock_offset(publisher),
        "subscriber": await pages.page_clock_offset(subscriber),
    }
    if isinstance(harness, AiosfuHarness):
        harness.offset = offsets["subscriber"]

    bandwidth = {
        "available_outgoing_bitrate": await pages.available_bitrate(publisher),
        "target_bitrates": {
            rid: v["target"] for rid, v in (await pages.publisher_snapshot(publisher)).items()
        },
    }
    quiet = await pages.subscriber_snapshot(subscriber)
    quiet_from = time.time() * 1000 - offsets["subscriber"]
    await asyncio.sleep(options.baseline)
    quiet_end = await pages.subscriber_snapshot(subscriber)
    quiet_frames = await pages.rows_since(subscriber, "__frames", quiet_from)
    baseline = {
        "seconds": options.baseline,
        "freezes": quiet_end["freezes"] - quiet["freezes"],
        "freeze_s": round(quiet_end["freeze_s"] - quiet["freeze_s"], 3),
        "longest_gaps_ms": longest_gaps(quiet_frames, quiet_from, int(options.baseline)),
        "presented_fps": round(len(quiet_frames) / options.baseline, 1),
    }
    cpu_before, ours_before = cpu_seconds(server_pid), namespace_cpu_seconds()
    busy_before, wall_before = busy_cpu_seconds(), time.time()
    sub_start = await pages.subscriber_snapshot(subscriber)
    switches = []
    was = 2
    for index in range(count):
        layer = CYCLE[index % len(CYCLE)]
        pub_before = await pages.publisher_snapshot(publisher)
        sub_before = await pages.subscriber_snapshot(subscriber)
        at = await harness.request(layer)
        await _wait_for_width(subscriber, offsets["subscriber"], at, WIDTHS[layer], options)
        await asyncio.sleep(max(0.0, (at / 1000 + options.interval) - time.time()))
        window = {
            "frames": await pages.rows_since(
                subscriber, "__frames", at - offsets["subscriber"] - 500
            ),
            "stats": await pages.rows_since(subscriber, "__stats", at - offsets["subscriber"]),
            "publisher": await pages.rows_since(publisher, "__pubRows", at - offsets["publisher"]),
        }
        pub_after = await pages.publisher_snapshot(publisher)
        sub_after = await pages.subscriber_snapshot(subscriber)
        switches.append(
            analyse_switch(
                index,
                was,
                layer,
                at,
                offsets,
                window,
                (pub_before, pub_after),
                (sub_before, sub_after),
                rid_of,
            )
        )
        if options.raw:
            switches[-1]["raw"] = window
        was = layer
        print(f"  {harness.name} {progress(switches[-1])}", flush=True)

    wall = time.time() - wall_before
    bandwidth["available_outgoing_bitrate_end"] = await pages.available_bitrate(publisher)
    busy, ours = busy_cpu_seconds(), namespace_cpu_seconds()
    sub_end = await pages.subscriber_snapshot(subscriber)
    offsets_end = {
        "publisher": await pages.page_clock_offset(publisher),
        "subscriber": await pages.page_clock_offset(subscriber),
    }
    return {
        "sfu": harness.name,
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "server_cpu_pct": round(100 * (cpu_seconds(server_pid) - cpu_before) / wall, 1),
        "ours_cpu_pct": round(100 * (ours - ours_before) / wall, 1),
        "others_cpu_pct": round(100 * (busy - busy_before - ours + ours_before) / wall, 1),
        "clock_offsets_ms": {
            page: [round(offsets[page], 2), round(offsets_end[page], 2)] for page in offsets
        },
        "rids": {rid: v["width"] for rid, v in layers.items()},
        "ssrcs": {
            str(v["ssrc"]): rid for rid, v in (await pages.publisher_snapshot(publisher)).items()
        },
        "camera": harness.camera,
        "baseline": baseline,
        "publisher_bandwidth": bandwidth,
        "subscriber_start": sub_start,
        "subscriber_end": sub_end,
        "switches": switches,
    }


async def _wait_for_width(
    subscriber: Page, offset: float, at: float, width: int, options: Options
) -> None:
    """Until a frame of ``width`` is presented, or the interval is nearly over."""
    deadline = at / 1000 + options.interval - 0.3
    while time.time() < deadline:
        frames = await pages.rows_since(subscriber, "__frames", at - offset)
        if any(int(f[1]) == width for f in frames):
            return
        await asyncio.sleep(0.05)


# --- the run ---


def namespace_cpu_seconds() -> float:
    """CPU time of the processes in this thread's network namespace: the SFU, Chromium's
    processes, playwright's driver and this one."""
    ours = os.readlink("/proc/thread-self/ns/net")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if os.readlink(entry / "ns/net") == ours:
                    total += cpu_seconds(int(entry.name))
    return total


def enter_namespace(name: str) -> contextlib.AbstractContextManager[None]:
    """Move this thread (and so every process and thread it starts) into netns ``name``."""

    @contextlib.contextmanager
    def entered() -> Iterator[None]:
        libc = ctypes.CDLL(None, use_errno=True)
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {name}")
            try:
                yield
            finally:
                libc.setns(original, CLONE_NEWNET)
        finally:
            os.close(target)
            os.close(original)

    return entered()


async def run_all(options: Options, network: Network, workdir: Path) -> list[dict[str, Any]]:
    """The rounds, each SFU once per round, in the order A B, B A, A B... (a load that drifts
    during the run then weighs on both alike)."""
    runs = []
    for number, switches in enumerate(rounds(options.switches, options.rounds)):
        order = options.sfus if number % 2 == 0 else tuple(reversed(options.sfus))
        for sfu in order:
            print(f"round {number + 1}, {sfu}: {switches} switches", flush=True)
            run = run_aiosfu if sfu == "aiosfu" else run_janus
            runs.append(await run(options, network, workdir, number, switches))
    return runs


def rounds(switches: int, count: int) -> list[int]:
    """``switches`` dealt over ``count`` rounds, the first ones getting the remainder."""
    count = max(1, min(count, switches))
    return [switches // count + (1 if i < switches % count else 0) for i in range(count)]


async def run_aiosfu(
    options: Options, network: Network, workdir: Path, number: int, switches: int
) -> dict[str, Any]:
    server, url = start_aiosfu(
        workdir, options.server_log, f"aiosfu-{number + 1}", options.server_module
    )
    try:
        run = await run_sfu(AiosfuHarness(url), options, server.pid, switches)
    finally:
        server.stop()
    if options.server_log == "debug":
        run["server_timeline"] = server_timeline(
            server.stderr_path, run["switches"], run["ssrcs"], options.interval
        )
    return run


async def run_janus(
    options: Options, network: Network, workdir: Path, number: int, switches: int
) -> dict[str, Any]:
    server, ws_url = start_janus(network, workdir, options.janus_configs, None)
    try:
        async with blank_page_server() as page_url:
            harness = JanusHarness(ws_url, page_url, options.janus_fir_freq)
            return await run_sfu(harness, options, server.pid, switches)
    finally:
        server.stop()


def machine(options: Options) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    chromium = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True)
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "chromium": chromium.stdout.strip(),
        "janus": janus_version() if "janus" in options.sfus else None,
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "switches": options.switches,
        "interval_s": options.interval,
        "fps": options.fps,
        "cycle": list(CYCLE),
        "server_log": options.server_log,
        "janus_fir_freq": options.janus_fir_freq,
        "nice": options.nice,
        "baseline_s": options.baseline,
        "rounds": options.rounds,
        "server_module": options.server_module,
    }


def save(document: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = document["meta"]["started"].replace(":", "").replace("-", "")[:15]
    path = out / f"simulcast-switch-{stamp}.json"
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--switches", type=int, default=24)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between requests")
    parser.add_argument("--fps", type=int, default=30, help="the publisher's capture rate")
    parser.add_argument(
        "--baseline",
        type=float,
        default=10.0,
        help="seconds the subscriber plays the top layer before the switches (its freezes "
        "then are the baseline)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="split the switches over this many rounds, the SFUs alternating (fresh server and "
        "browser each)",
    )
    parser.add_argument("--sfu", choices=("aiosfu", "janus", "both"), default="both")
    parser.add_argument(
        "--server-log",
        choices=("debug", "info"),
        default="debug",
        help="aiosfu's log level (debug: the per-switch lines that split the switch time)",
    )
    parser.add_argument(
        "--janus-fir-freq",
        type=int,
        default=0,
        help="the Janus room's periodic keyframe requests, s (0: none, as aiosfu; the testbed's "
        "room 1234 has 10)",
    )
    parser.add_argument(
        "--server-module",
        default="signaling.cli",
        help="run aiosfu as `python -m MODULE serve` (a variant's wrapper, for experiments)",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="keep every switch's probe rows (frames, getStats, publisher counters) in the JSON",
    )
    parser.add_argument("--janus-configs", type=Path, default=DEFAULT_JANUS_CONFIGS)
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run this process, and so the SFU and Chromium, at this nice value (e.g. -5, as "
        "root): other work on a shared machine then disturbs the timing less",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--logs", type=Path, help="keep the servers' output here")
    args = parser.parse_args(argv)
    sfus = ("aiosfu", "janus") if args.sfu == "both" else (args.sfu,)
    if os.geteuid() != 0:
        parser.error("needs root (a network namespace of its own)")
    if not CHROMIUM.exists():
        parser.error(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    if "janus" in sfus and shutil.which("janus") is None:
        parser.error("janus is not installed: apt-get install -y janus (or --sfu aiosfu)")
    if args.switches < 1 or args.interval < 1:
        parser.error("--switches and --interval must be at least 1")
    return Options(
        switches=args.switches,
        interval=args.interval,
        fps=args.fps,
        sfus=sfus,
        server_log=args.server_log,
        janus_fir_freq=args.janus_fir_freq,
        janus_configs=args.janus_configs,
        out=args.out,
        logs=args.logs,
        nice=args.nice,
        baseline=args.baseline,
        rounds=args.rounds,
        server_module=args.server_module,
        raw=args.raw,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    options = parse_args(argv)
    if options.nice:
        os.nice(options.nice)
    meta = machine(options)
    print(f"load: {meta['uptime']}", flush=True)
    with contextlib.ExitStack() as stack:
        if options.logs is not None:
            options.logs.mkdir(parents=True, exist_ok=True)
            workdir = options.logs
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="switch-")))
        network = stack.enter_context(namespace(f"switch-{os.getpid()}"))
        stack.enter_context(enter_namespace(network.namespace or ""))
        runs = asyncio.run(run_all(options, network, workdir))
    summary = [summarize(sfu, [r for r in runs if r["sfu"] == sfu]) for sfu in options.sfus]
    document = {"meta": meta, "summary": summary, "runs": runs}
    path = save(document, options.out)
    print(summary_table(summary))
    for row in summary:
        if "server_timeline" in row:
            print(
                f"{row['sfu']} at the server (medians, ms after the request): "
                f"{row['server_timeline']}"
            )
    print(f"saved: {path}")
    return document


if __name__ == "__main__":
    main()
