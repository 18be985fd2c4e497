"""Bandwidth adaptation for Chromium subscribers on a shaped link (issue 10), the demo page's view.

The publisher is Python (tests/e2e/shaped_publisher.py, a process of its own playing
``PreEncodedLayers`` of shaped_link.py's clips: 160x90 at 0.1 Mbit/s, 320x180 at 0.3, 640x360
at 1.2), not Chromium: a Chromium camera would cost a share of the two cores for its three
encoders and a 720p decode at the unshaped page, and its encoder would bend its layers'
bitrates to its own uplink estimate and the machine's load; the pre-encoded layers keep their
rates, so what changes is the subscriber's link alone. Two Chromium pages watch it (see
shaped_chromium.py): one beside the server, one behind the veth whose downlink ``tc tbf``
limits. Server, publisher and browsers run at shaped_link's priority ``NICE``.

Unlimited -> 400 kbit/s -> lifted: the shaped page settles on a lower layer and climbs back to
the top, the unshaped one shows the top layer throughout without a freeze. Below the smallest
layer (64 kbit/s) the server pauses the video: the page's tile says so until it resumes (it
once stayed paused: a paused subscriber sends nothing, gets no feedback, and the last feedback's
verdict forbade the probe that would show the recovery — fixed in c82dc4a). The
tests assert outcomes (which layers each page shows, that the unshaped one never freezes, what
the page says), never how fast; the times are printed (``pytest -s``). On a failure the message
holds what each page showed between the marks and the server's per-subscriber "bandwidth" log.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import PageLog, _unavailable
from tests.browser.shaped_chromium import (
    WatchingChromium,
    WatchingPage,
    chromium_in,
    freezes,
    on_widths,
    run_start,
)
from tests.e2e.peer_process import PeerProcess
from tests.e2e.shaped_link import (
    LAYERS,
    NICE,
    SERVER_ADDRESS,
    LinkUnavailable,
    ServerProcess,
    ShapedLink,
    check_available,
)

pytestmark = pytest.mark.browser

PUBLISHER = "publisher"
ROOM = "bwe"
PUBLISH_TIMEOUT = 40.0  # the publisher process encodes its clips first (seconds of CPU)
LIMIT = 400_000
#: below the smallest layer: the server must pause the video
STARVED = 64_000
TOP = LAYERS[-1][1]
LOWER = {width for _, width, _, _ in LAYERS[:-1]}
STEADY = 20  # frames in a row (1 s at 20 fps) that make "on a layer"
START_TIMEOUT = 25.0  # both pages on the top layer (the estimate ramps up, probing)
SETTLE_TIMEOUT = 20.0  # on a lower layer after the step (target: 2 s)
LIFT_TIMEOUT = 25.0  # back on the top layer after the lift (target: 8 s)
PAUSE_MS = 25_000  # the video paused after the limit / resumed after the lift (playwright ms)
HOLD = 4.0  # seconds watched once settled
QUALITIES = {"excellent", "good", "poor"}
QUALITY_WORD = re.compile("^(excellent|good|poor)$")

CAMERA_TRACK_JS = """(name) => {
  const client = window.sfuApp.client;
  const who = [...client.participants.values()].find((p) => p.name === name);
  return [...who.tracks.values()].find((t) => t.source === "camera").trackId;
}"""


@dataclass
class Call:
    link: ShapedLink
    server: ServerProcess
    room: str
    publisher: PeerProcess
    pages: dict[str, WatchingPage] = field(default_factory=dict)
    marks: list[tuple[float, str]] = field(default_factory=list)

    def mark(self, label: str) -> float:
        now = time.monotonic()
        self.marks.append((now, label))
        return now

    def shape(self, rate: int | None) -> float:
        if rate is None:
            self.link.lift()
        else:
            self.link.shape(rate)
        return self.mark("lifted" if rate is None else f"limit {rate // 1000} kbit/s")

    def bandwidth_records(self) -> list[dict[str, Any]]:
        """The server's "bandwidth" debug records (each subscriber's every 2 s), with ``at``
        on the marks' clock."""
        offset = time.time() - time.monotonic()
        records = []
        for line in self.server.stderr_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError):
                record = json.loads(line)
                if record.get("event") == "bandwidth":
                    wall = datetime.fromisoformat(record["timestamp"]).timestamp()
                    records.append({**record, "at": wall - offset})
        return records

    def bandwidth_log(self) -> list[str]:
        since = self.marks[0][0] if self.marks else 0.0
        return [
            f"{r['at'] - since:6.1f} s {r['participant'][-4:]} {r['source']} estimate "
            f"{r['estimate']} {r['state']} loss {r['loss']} sent {r['sent']} allocated "
            f"{r['allocated']} wanted {r['wanted']} paused {r['paused']} probes {r['probes']} "
            f"feedback {r['feedback']}"
            for r in self.bandwidth_records()
        ]

    async def describe(self) -> str:
        """What each page showed between the marks, and the server's view."""
        bounds = [*self.marks, (time.monotonic(), "end")]
        out = []
        frames = {name: await page.frames() for name, page in self.pages.items()}
        for (since, label), (until, _) in itertools.pairwise(bounds):
            sent = self.publisher.seen.sent  # each with its loop's lag of the 0.5 s before
            lag = max((r["lag"] for r in sent if since <= r["t"] < until + 0.5), default=0.0)
            out.append(
                f"{label} (+{since - bounds[0][0]:.1f} s, {until - since:.1f} s), the "
                f"publisher's loop late by up to {lag * 1000:.0f} ms"
            )
            for name, shown in frames.items():
                widths = Counter(w for t, w in shown if since <= t < until)
                # a freeze that began before the mark counts where it ends
                times = [t for t, _ in shown if since - 1.0 <= t < until]
                stalls = [(t, g) for t, g in freezes(times, until) if t + g >= since]
                starts = ", ".join(f"+{t - bounds[0][0]:.2f} {g:.2f} s" for t, g in stalls)
                out.append(
                    f"  {name}: widths {dict(sorted(widths.items()))}, {len(stalls)} freezes "
                    f"{total(stalls):.2f} s {f'({starts})' if stalls else ''}"
                )
        for name, page in self.pages.items():
            out.append(f"{name}: {await page.inbound()}")
            out.append(f"{name}: stream-state {await page.events('streams')}")
            quality = await page.events("quality")
            out.append(f"{name}: last connection-quality {quality[-2:]}")
        out.append("server, bandwidth per subscriber:\n" + "\n".join(self.bandwidth_log()))
        return "\n".join(out)


@pytest.fixture
def link() -> Iterator[ShapedLink]:
    try:
        check_available()
    except LinkUnavailable as exc:
        _unavailable(str(exc))
    with ShapedLink() as shaped:
        yield shaped


@contextlib.asynccontextmanager
async def shaped_call(
    link: ShapedLink, workdir: Path, logs: list[PageLog], *, unshaped: bool = True
) -> AsyncIterator[Call]:
    """Server and publisher in the server's namespace; the shaped page behind the veth, and
    (``unshaped``) a second page beside the server; each page on the top layer."""
    async with contextlib.AsyncExitStack() as stack:
        server = ServerProcess(link, workdir, "--log-level", "debug")
        stack.callback(server.stop)
        args = ["--url", server.url(), "--room", ROOM, "--ice-host", "127.0.0.1"]
        publisher = await PeerProcess.start(
            link.command(link.server_ns), "tests.e2e.shaped_publisher", PUBLISHER, args, workdir
        )
        stack.push_async_callback(publisher.stop)
        call = Call(link, server, ROOM, publisher)
        # the pages' browsers, as the call's other processes at priority NICE
        places = [(link.subscriber_ns, server.url(SERVER_ADDRESS), "shaped")]
        if unshaped:
            places.append((link.server_ns, server.url(), "unshaped"))
        watchers: list[tuple[WatchingChromium, str, str]] = []
        for namespace, url, name in places:
            chromium = await stack.enter_async_context(chromium_in(namespace, logs, NICE))
            watchers.append((chromium, url, name))
        await publisher.wait_until(
            lambda seen: seen.track_id is not None, PUBLISH_TIMEOUT, "published video"
        )
        for chromium, url, name in watchers:
            call.pages[name] = await chromium.watch(url, call.room, name, PUBLISHER)
        start = call.mark("start")
        for page in call.pages.values():
            await wait_frames(call, page, {TOP}, start, START_TIMEOUT, "top-layer frames")
        yield call


async def wait_frames(
    call: Call,
    page: WatchingPage,
    widths: set[int],
    since: float,
    timeout: float,  # noqa: ASYNC109
    what: str,
) -> list[tuple[float, int]]:
    """Wait until ``page``'s last STEADY frames since ``since`` are of ``widths``."""
    deadline = time.monotonic() + timeout
    while True:
        frames = await page.frames(since)
        if on_widths(frames, widths, STEADY):
            return frames
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{page.name}: no {what} within {timeout} s\n{await call.describe()}"
            )
        await asyncio.sleep(0.25)


@contextlib.asynccontextmanager
async def described(call: Call) -> AsyncIterator[None]:
    """A failed expectation in the body says what the pages and the server saw."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await call.describe()}") from None


def total(stalls: list[tuple[float, float]]) -> float:
    return sum(gap for _, gap in stalls)


async def test_a_shaped_chromium_settles_on_a_lower_layer_and_climbs_back_after_the_lift(
    link: ShapedLink, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    logs: list[PageLog] = []
    request.node.browser_logs = logs
    async with shaped_call(link, tmp_path, logs) as call:
        shaped, unshaped = call.pages["shaped"], call.pages["unshaped"]
        begin = call.mark("both on top")
        before, at_step = await unshaped.inbound(), await shaped.inbound()

        step = call.shape(LIMIT)
        await wait_frames(call, shaped, LOWER, step, SETTLE_TIMEOUT, "lower-layer frames")
        settled = run_start(await shaped.frames(step), LOWER)
        assert settled is not None
        hold = call.mark("settled")
        link_hold, page_hold = link.qdisc_stats(), await shaped.inbound()
        await asyncio.sleep(HOLD)
        held = call.mark("held")
        link_held, page_held = link.qdisc_stats(), await shaped.inbound()
        # settled: it keeps showing frames, of the lower layers only
        during = await shaped.frames(hold)
        assert len(during) >= STEADY and {w for _, w in during} <= LOWER, (
            f"not settled on the lower layers\n{await call.describe()}"
        )
        quality = await shaped.events("quality", hold)
        assert quality, f"no connection-quality event while limited\n{await call.describe()}"
        assert all(q["quality"] in QUALITIES for q in quality), quality

        lift = call.shape(None)
        await wait_frames(call, shaped, {TOP}, lift, LIFT_TIMEOUT, "top-layer frames again")
        back = run_start(await shaped.frames(lift), {TOP})
        assert back is not None
        await asyncio.sleep(1.0)
        end = call.mark("end")

        # the unshaped page: the top layer throughout, and never a freeze
        beside = await unshaped.frames(begin)
        assert {w for _, w in beside} == {TOP}, f"unshaped left the top\n{await call.describe()}"
        stalls = freezes([t for t, _ in beside], end)
        after = await unshaped.inbound()
        assert not stalls and after.freeze_count == before.freeze_count, (
            f"the unshaped page froze: {stalls}, {before} -> {after}\n{await call.describe()}"
        )
        # the shaped page shows the server's view of its downlink
        tile = shaped.page.locator('#grid .tile[data-self="true"]')
        await expect(tile).to_have_attribute("data-quality", QUALITY_WORD)
        await expect(tile.locator(".quality")).to_contain_text("↓")

        shown = await shaped.frames(step - 1.0)
        across = freezes([t for t, _ in shown if t < held], held)
        after_lift = freezes([t for t, _ in shown if t >= lift - 1.0], end)
        dropped, passed = link_held.drops - link_hold.drops, link_held.packets - link_hold.packets
        lost = page_held.packets_lost - page_hold.packets_lost
        got = page_held.packets_received - page_hold.packets_received
        print(
            f"\nsettle {settled - step:.2f} s on {sorted({w for _, w in during})};"
            f" freezes across the step {total(across):.2f} s ({len(across)}; Chromium"
            f" {page_held.freeze_count - at_step.freeze_count},"
            f" {page_held.freeze_seconds - at_step.freeze_seconds:.2f} s); once settled: link"
            f" loss {dropped / max(1, dropped + passed):.1%} of {dropped + passed} packets,"
            f" video loss {lost / max(1, lost + got):.1%}, frames decoded"
            f" {page_held.frames_decoded - page_hold.frames_decoded} shown {len(during)} in"
            f" {held - hold:.1f} s, estimates {[q['estimateBps'] for q in quality]};"
            f" back on top {back - lift:.2f} s, freezes after the lift {total(after_lift):.2f} s"
            f" ({len(after_lift)}); unshaped frames decoded"
            f" {after.frames_decoded - before.frames_decoded}, freezes {after.freeze_count}"
        )
        print(await call.describe())


async def test_a_tile_paused_for_bandwidth_says_so_until_the_link_carries_it_again(
    link: ShapedLink, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    logs: list[PageLog] = []
    request.node.browser_logs = logs
    async with shaped_call(link, tmp_path, logs, unshaped=False) as call:
        shaped = call.pages["shaped"]
        tile = shaped.page.locator(f'#grid .tile[data-name="{PUBLISHER}"]')
        overlay = tile.locator(".paused")
        await expect(overlay).to_be_hidden()

        starve = call.shape(STARVED)
        async with described(call):
            await expect(tile).to_have_attribute("data-paused", "bandwidth", timeout=PAUSE_MS)
        paused = call.mark("paused")
        await expect(overlay).to_be_visible()
        await expect(overlay).to_have_text("paused: low bandwidth")
        async with described(call):
            await expect(shaped.page.locator('#grid .tile[data-self="true"]')).to_have_attribute(
                "data-quality", "poor", timeout=PAUSE_MS
            )

        lift = call.shape(None)
        async with described(call):
            await expect(overlay).to_be_hidden(timeout=PAUSE_MS)
        resumed = call.mark("resumed")
        await wait_frames(call, shaped, {w for _, w, _, _ in LAYERS}, lift, LIFT_TIMEOUT, "frames")
        # the events behind it: paused for bandwidth, then active again (the publisher's camera)
        events = await shaped.events("streams")
        camera = await shaped.page.evaluate(CAMERA_TRACK_JS, PUBLISHER)
        assert {e["trackId"] for e in events} == {camera}, events
        assert events[0]["state"] == "paused" and events[-1]["state"] == "active", events
        assert {e["reason"] for e in events} == {"bandwidth"}, events
        assert await shaped.page.evaluate("() => window.sfuApp.client.pausedTracks.size") == 0
        print(
            f"\npaused {paused - starve:.2f} s after the limit of {STARVED // 1000} kbit/s,"
            f" resumed {resumed - lift:.2f} s after the lift\n{await call.describe()}"
        )
