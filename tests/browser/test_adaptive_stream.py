"""sfu-client.js's simulcast control side in real headless Chromium, through the real server.

Adaptive stream: the demo page registers each remote video with ``observeElement``; what it sends
is read from the page's WebSocket frames (Playwright's ``framesent``). Publishing: the demo page
sends a 640x360 camera as three encodings, and ``publisherLayers`` turns encodings off.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest
from playwright.async_api import Page, WebSocket

from tests.browser.conftest import CAPTURE, Browser, PageLog, wait_joined
from tests.e2e.conftest import ClientFactory
from tests.e2e.test_call import publish_markers

pytestmark = pytest.mark.browser

TIMEOUT = 20.0
#: longer than the client's debounce (300 ms), so that a report that would come has come
QUIET = 1.0
SCALE = 2  # device pixels per CSS pixel: sizes are reported in device pixels

_HIDE_PAGE_JS = """(state) => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
  document.dispatchEvent(new Event("visibilitychange"));
}"""

_ENCODINGS_JS = """() => window.sfuApp.local.camera.transceiver.sender.getParameters().encodings
  .map((e) => ({ rid: e.rid ?? null, active: e.active, scale: e.scaleResolutionDownBy ?? 1 }))"""

_INJECT_JS = """([trackId, layers]) => window.sfuApp.client._onMessage(JSON.stringify({
  type: "publisherLayers", trackId,
  layers: Object.entries(layers).map(([rid, active]) => ({ rid, active })),
}))"""


class SentFrames:
    """The JSON messages a page sent on its signaling WebSocket, in order."""

    def __init__(self, page: Page) -> None:
        self.messages: list[dict[str, Any]] = []
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, ws: WebSocket) -> None:
        ws.on("framesent", self._on_frame)

    def _on_frame(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            self.messages.append(json.loads(payload))

    def settings(self, track_id: str) -> list[dict[str, Any]]:
        """What each setTrackSettings for ``track_id`` asked (without type, ids, requestId)."""
        return [
            {k: v for k, v in m.items() if k not in ("type", "trackIds", "requestId")}
            for m in self.messages
            if m.get("type") == "setTrackSettings" and track_id in m["trackIds"]
        ]

    async def wait_settings(self, track_id: str, expected: dict[str, Any]) -> None:
        """Wait until the latest settings sent for ``track_id`` are ``expected``."""
        deadline = time.monotonic() + TIMEOUT
        while not (sent := self.settings(track_id)) or sent[-1] != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"setTrackSettings for {track_id}: {sent}, not {expected}")
            await asyncio.sleep(0.1)


async def new_page(browser: Browser, name: str) -> Page:
    """A page as Browser.new_page makes it, at ``SCALE`` device pixels per CSS pixel."""
    context = await browser.chromium.new_context(
        viewport={"width": 960, "height": 600}, device_scale_factor=SCALE
    )
    page = await context.new_page()
    log = PageLog(name)
    browser.logs.append(log)
    page.on("console", lambda m: log.console(m.type, m.text))
    page.on("pageerror", lambda e: log.console("pageerror", str(e)))
    return page


async def tile_style(page: Page, participant_id: str, **style: str) -> None:
    await page.evaluate(
        """([id, style]) => Object.assign(
             document.querySelector(`.tile[data-key="${id}"]`).style, style)""",
        [participant_id, style],
    )


async def test_adaptive_stream_follows_the_tile(
    browser: Browser, make_client: ClientFactory, room: str
) -> None:
    """A remote camera's tile: its size in device pixels, paused while it is hidden (display:
    none), scrolled out of the grid or the page is hidden (document.visibilityState emulated:
    headless Chromium never hides a page), resumed when shown; one message per change."""
    publisher = await make_client(room, "python")
    video, _ = await publish_markers(publisher, 0, audio=False)
    assert publisher.participant_id is not None
    tile = publisher.participant_id

    page = await new_page(browser, "viewer")
    frames = SentFrames(page)
    await page.goto(browser.url(room=room, name="viewer", autojoin="1", **CAPTURE))
    await wait_joined(page)
    await page.wait_for_selector(f'.tile[data-key="{tile}"][data-video="true"]')

    # 320x180 CSS pixels (the tile keeps 16:9), 640x360 device pixels
    await tile_style(page, tile, width="320px")
    await frames.wait_settings(video.track_id, {"maxWidth": 640, "maxHeight": 360})
    await tile_style(page, tile, width="200px")
    await frames.wait_settings(video.track_id, {"maxWidth": 400, "maxHeight": 225})
    shown = {"maxWidth": 400, "maxHeight": 225}

    await tile_style(page, tile, display="none")
    await frames.wait_settings(video.track_id, {"paused": True})
    await tile_style(page, tile, display="")
    await frames.wait_settings(video.track_id, shown)

    # scrolled out of the grid (its overflow clips it), then back
    await page.evaluate(
        """() => {
          const grid = document.getElementById("grid");
          grid.style.alignContent = "start";
          const spacer = document.createElement("div");
          spacer.style.cssText = "grid-column: 1 / -1; height: 3000px";
          grid.prepend(spacer);
        }"""
    )
    await frames.wait_settings(video.track_id, {"paused": True})
    await page.evaluate(
        f'() => document.querySelector(`.tile[data-key="{tile}"]`).scrollIntoView()'
    )
    await frames.wait_settings(video.track_id, shown)

    await page.evaluate(_HIDE_PAGE_JS, "hidden")
    await frames.wait_settings(video.track_id, {"paused": True})
    await page.evaluate(_HIDE_PAGE_JS, "visible")
    await frames.wait_settings(video.track_id, shown)

    # only changes are sent: nothing more while nothing changes, never the same twice in a row
    count = len(frames.settings(video.track_id))
    # a resize to the same device pixels (400.4 x 225.2): observed, and nothing to tell
    await tile_style(page, tile, width="200.2px")
    await asyncio.sleep(QUIET)
    sent = frames.settings(video.track_id)
    assert len(sent) == count, sent
    assert all(a != b for a, b in itertools.pairwise(sent)), sent
    # the viewer's own camera (the self tile) is not observed
    assert all(
        m["trackIds"] == [video.track_id]
        for m in frames.messages
        if m.get("type") == "setTrackSettings"
    )
    browser.assert_no_page_errors()


async def test_adaptive_stream_can_be_turned_off(
    browser: Browser, make_client: ClientFactory, room: str
) -> None:
    publisher = await make_client(room, "python")
    await publish_markers(publisher, 1, audio=False)
    page = await browser.new_page("viewer")
    frames = SentFrames(page)
    await page.goto(browser.url(room=room, name="viewer", autojoin="1", adaptive="0", **CAPTURE))
    await wait_joined(page)
    await page.wait_for_selector(f'.tile[data-key="{publisher.participant_id}"][data-video="true"]')
    await tile_style(page, str(publisher.participant_id), width="200px")
    await asyncio.sleep(QUIET)
    assert [m for m in frames.messages if m.get("type") == "setTrackSettings"] == []
    browser.assert_no_page_errors()


async def encodings(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.evaluate(_ENCODINGS_JS)
    return result


async def wait_active(page: Page, expected: dict[str | None, bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while (now := {e["rid"]: e["active"] for e in await encodings(page)}) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"encodings active {now}, not {expected}")
        await asyncio.sleep(0.1)


async def test_publisher_layers_turn_encodings_off(browser: Browser, room: str) -> None:
    """The demo page sends a 640x360 camera as simulcast (rids q, h, f), and sets inactive the
    encodings a ``publisherLayers`` event says nobody receives; muting turns all off and
    unmuting restores what the server asked.

    The server cannot be made to send ``publisherLayers`` yet (nobody emits it until the media
    plane does): the message is handed to the page's client (``SfuClient._onMessage``) as its
    WebSocket would hand it over. The encodings are read back with ``sender.getParameters()``.
    """
    page = await browser.new_page("publisher")
    frames = SentFrames(page)
    await page.goto(
        browser.url(room=room, name="publisher", autojoin="1", video="640x360", fps="15")
    )
    await wait_joined(page)
    assert await page.evaluate("() => window.sfuApp.local.camera.simulcast") is True
    (offer,) = [m for m in frames.messages if m.get("type") == "offer"]
    assert "a=simulcast:send q;h;f" in offer["sdp"]
    track_id = await page.evaluate("() => window.sfuApp.local.camera.trackId")
    # the server's answer took all three (a sender keeps only those the answer names)
    rids = [e["rid"] for e in await encodings(page)]
    assert rids == ["q", "h", "f"]
    off = "h"

    await page.evaluate(_INJECT_JS, [track_id, {rid: rid != off for rid in rids}])
    await wait_active(page, {rid: rid != off for rid in rids})
    await page.evaluate(_INJECT_JS, [track_id, dict.fromkeys(rids, True)])
    await wait_active(page, dict.fromkeys(rids, True))

    # muted: everything off, whatever the server wants; unmuted: what the server wants
    await page.evaluate("() => window.sfuApp.client.setMuted(window.sfuApp.local.camera, true)")
    await wait_active(page, dict.fromkeys(rids, False))
    await page.evaluate(_INJECT_JS, [track_id, {off: False}])
    await page.evaluate("() => window.sfuApp.client.setMuted(window.sfuApp.local.camera, false)")
    await wait_active(page, {rid: rid != off for rid in rids})
    browser.assert_no_page_errors()


async def test_small_capture_or_simulcast_0_publish_one_encoding(
    browser: Browser, room: str
) -> None:
    for name, query in (("small", CAPTURE), ("opted-out", {"video": "640x360", "simulcast": "0"})):
        page = await browser.new_page(name)
        await page.goto(browser.url(room=f"{room}-{name}", name=name, autojoin="1", **query))
        await wait_joined(page)
        assert await page.evaluate("() => window.sfuApp.local.camera.simulcast") is False
        assert [e["rid"] for e in await encodings(page)] == [None]
        await page.close()
    browser.assert_no_page_errors()
