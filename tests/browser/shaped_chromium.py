"""Chromium subscribers on either side of a shaped link (tests/e2e/shaped_link.py).

The link's server namespace holds the server, the publisher and the unshaped page's Chromium
(127.0.0.1); its subscriber namespace holds the shaped page's Chromium, which reaches the server
at 10.99.0.1 through the veth whose downlink ``tc tbf`` limits. A process's network namespace
is that of the thread that forks it, so each Chromium comes from a playwright driver started
while this thread was in that namespace.

The pages are the demo page watching only (no camera: Chromium starts without fake devices, so
``getUserMedia`` fails and the page joins to watch) with adaptive stream off, so that the
server's bandwidth allocation alone chooses the layer. What a page saw is read from it:

- frames shown in the publisher's tile (``requestVideoFrameCallback``: time and width), which
  counts frames presented, not only decoded: Chromium's ``freezeCount`` counts only between
  decoded frames, so a stream that stops decoding shows no freeze at all;
- its video inbound-rtp counters (frames decoded, freezes, loss) on demand;
- the ``connection-quality`` and ``stream-state`` events of its SfuClient.

Times are converted to ``time.monotonic()`` with an offset measured once per page.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from playwright.async_api import Page, async_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, PageLog
from tests.browser.simulcast_probes import RECORD_FRAMES_JS
from tests.e2e.shaped_call import final_run_start
from tests.e2e.shaped_link import in_namespace

FAKE_DEVICES = "--use-fake-device-for-media-stream"
#: the demo page's Chromium, watching only: no fake camera or microphone
WATCHING_FLAGS = [flag for flag in CHROMIUM_FLAGS if flag != FAKE_DEVICES]
FREEZE_MIN = 0.150


@contextlib.asynccontextmanager
async def chromium_in(
    namespace: str,
    logs: list[PageLog],
    nice: int | None = None,
    flags: Sequence[str] = WATCHING_FLAGS,
) -> AsyncIterator[WatchingChromium]:
    """A headless Chromium whose processes live in ``namespace`` (at priority ``nice``),
    watching only unless given other ``flags``."""
    with in_namespace(namespace, nice):
        # the driver is forked now, in this namespace; Chromium is its child
        playwright = await async_playwright().start()
    try:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=list(flags), headless=True
        )
        try:
            yield WatchingChromium(browser, logs)
        finally:
            await browser.close()
    finally:
        await playwright.stop()


@dataclass
class WatchingChromium:
    browser: Any  # playwright's Browser
    logs: list[PageLog]

    async def watch(self, url: str, room: str, name: str, publisher: str) -> WatchingPage:
        """A demo page that joined ``room`` to watch, recording ``publisher``'s camera tile."""
        # camera and microphone allowed (none is used): Chromium then signals its host
        # addresses instead of mDNS names, and the server's ICE needs no peer-reflexive luck
        context = await self.browser.new_context(
            viewport={"width": 960, "height": 600}, permissions=["camera", "microphone"]
        )
        page = await context.new_page()
        log = PageLog(name)
        self.logs.append(log)
        page.on("console", lambda m: log.console(m.type, m.text))
        page.on("pageerror", lambda e: log.console("pageerror", str(e)))
        await page.goto(f"{url}/?room={room}&name={name}&autojoin=1&adaptive=0")
        await page.wait_for_function(
            "() => window.sfuApp && window.sfuApp.client && window.sfuApp.client.participantId",
            timeout=20_000,
        )
        await page.evaluate(_RECORD_EVENTS_JS)
        await page.wait_for_function(RECORD_FRAMES_JS, arg=publisher, timeout=20_000)
        return WatchingPage(page, name, await _clock_offset(page))


async def _clock_offset(page: Page) -> float:
    """monotonic() - performance.now() in seconds, to the round trip's midpoint."""
    before = time.monotonic()
    now_ms: float = await page.evaluate("() => performance.now()")
    after = time.monotonic()
    return (before + after) / 2 - now_ms / 1000


_RECORD_EVENTS_JS = """() => {
  const client = window.sfuApp.client;
  window.__quality = [];
  window.__streams = [];
  client.addEventListener("connection-quality",
    (e) => window.__quality.push({ t: performance.now(), ...e.detail }));
  client.addEventListener("stream-state",
    (e) => window.__streams.push({ t: performance.now(), trackId: e.detail.trackId,
                                   state: e.detail.state, reason: e.detail.reason }));
}"""

_FRAMES_SINCE_JS = "(after) => window.__frames.filter(([t]) => t >= after)"

_INBOUND_VIDEO_JS = """async () => {
  const out = { framesDecoded: 0, freezeCount: 0, freezeSeconds: 0, packetsLost: 0,
                packetsReceived: 0, keyFramesDecoded: 0 };
  for (const r of window.sfuApp.client.pc.getReceivers()) {
    if (r.track.kind !== "video") continue;
    (await r.getStats()).forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      out.framesDecoded += s.framesDecoded ?? 0;
      out.keyFramesDecoded += s.keyFramesDecoded ?? 0;
      out.freezeCount += s.freezeCount ?? 0;
      out.freezeSeconds += s.totalFreezesDuration ?? 0;
      out.packetsLost += s.packetsLost ?? 0;
      out.packetsReceived += s.packetsReceived ?? 0;
    });
  }
  return out;
}"""


@dataclass(frozen=True, slots=True)
class Inbound:
    """The page's video inbound-rtp counters, summed over its video receivers."""

    frames_decoded: int
    key_frames_decoded: int
    freeze_count: int
    freeze_seconds: float
    packets_lost: int
    packets_received: int


@dataclass
class WatchingPage:
    page: Page
    name: str
    offset: float  # monotonic() - performance.now() / 1000

    async def frames(self, since: float = 0.0) -> list[tuple[float, int]]:
        """(monotonic time, width) of each frame shown since ``since``."""
        after_ms = (since - self.offset) * 1000
        rows: list[list[float]] = await self.page.evaluate(_FRAMES_SINCE_JS, after_ms)
        return [(self.offset + t / 1000, int(w)) for t, w in rows]

    async def inbound(self) -> Inbound:
        row: dict[str, Any] = await self.page.evaluate(_INBOUND_VIDEO_JS)
        return Inbound(
            int(row["framesDecoded"]), int(row["keyFramesDecoded"]), int(row["freezeCount"]),
            float(row["freezeSeconds"]), int(row["packetsLost"]), int(row["packetsReceived"]),
        )  # fmt: skip

    async def events(self, kind: str, since: float = 0.0) -> list[dict[str, Any]]:
        """``quality`` (connection-quality) or ``streams`` (stream-state) events since
        ``since``, each with ``t`` in monotonic time."""
        rows: list[dict[str, Any]] = await self.page.evaluate(f"() => window.__{kind}")
        events = [{**row, "t": self.offset + row["t"] / 1000} for row in rows]
        return [e for e in events if e["t"] >= since]


# --- reading frames ---


def freezes(times: Sequence[float], end: float | None = None) -> list[tuple[float, float]]:
    """(start, length) of each freeze among frames shown at ``times``: a gap longer than
    max(3 x the median interval, the median + 150 ms), webrtc-stats' ``freezeCount`` rule with
    the median for the mean. With ``end``, a stream that stopped is frozen until ``end``."""
    gaps = [(a, b - a) for a, b in itertools.pairwise(times)]
    median = statistics.median(g for _, g in gaps) if len(gaps) >= 3 else 0.05
    limit = max(3 * median, median + FREEZE_MIN)
    if end is not None and times and end - times[-1] > limit:
        gaps.append((times[-1], end - times[-1]))
    return [(start, gap) for start, gap in gaps if gap > limit]


def on_widths(frames: Sequence[tuple[float, int]], widths: set[int], count: int) -> bool:
    """Whether the last ``count`` frames are all of these widths."""
    recent = frames[-count:]
    return len(recent) == count and all(w in widths for _, w in recent)


def run_start(frames: Sequence[tuple[float, int]], widths: set[int]) -> float | None:
    """When the final run of frames of these widths began (None: the last frame is not)."""
    return final_run_start(frames, widths)
