"""sfu-client.js's selective subscription in real headless Chromium, through the real server.

The page uses the library directly (as an application would), not the demo page: it joins with
``autoSubscribe: false`` and receives a Python publisher's camera only once it subscribes to it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from playwright.async_api import Page

from tests.browser.conftest import Browser
from tests.e2e.conftest import ClientFactory
from tests.e2e.test_call import publish_markers

pytestmark = pytest.mark.browser

TIMEOUT = 20.0

_JOIN_JS = """async ([room, name]) => {
  const { SfuClient } = await import("/sfu-client.js");
  const client = new SfuClient();
  window.events = [];
  for (const type of ["track", "track-ended", "error"]) {
    client.addEventListener(type, (e) =>
      window.events.push({ type, trackId: e.detail.trackId ?? null,
                           code: e.detail.error?.code ?? null }));
  }
  window.client = client;
  await client.join(room, name, { autoSubscribe: false });
  return client.participantId;
}"""

_FRAMES_JS = """async (trackId) => {
  const remote = window.client.remoteTracks.get(trackId);
  if (!remote) return -1;
  const stats = await remote.receiver.getStats();
  for (const s of stats.values()) if (s.type === "inbound-rtp") return s.framesDecoded ?? 0;
  return 0;
}"""


async def events(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.evaluate("() => window.events")
    return result


async def wait_event(page: Page, type_: str, track_id: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for event in await events(page):
            if event["type"] == type_ and track_id in (None, event["trackId"]):
                return event
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {type_} event for {track_id}: {await events(page)}")


async def test_subscribe_and_unsubscribe_from_the_browser_library(
    browser: Browser, make_client: ClientFactory, room: str
) -> None:
    publisher = await make_client(room, "python")
    video, audio = await publish_markers(publisher, 0, settled=False)
    assert audio is not None
    page = await browser.new_page("viewer")
    await page.goto(browser.url())
    await page.evaluate(_JOIN_JS, [room, "viewer"])
    await asyncio.sleep(1.0)
    assert [e for e in await events(page) if e["type"] == "track"] == []

    await page.evaluate("(ids) => window.client.subscribe(ids)", [video.track_id])
    await wait_event(page, "track", video.track_id)
    deadline = time.monotonic() + TIMEOUT
    while await page.evaluate(_FRAMES_JS, video.track_id) < 10:
        assert time.monotonic() < deadline, "no video frames decoded after subscribing"
        await asyncio.sleep(0.2)
    assert audio.track_id not in await page.evaluate("() => [...window.client.remoteTracks.keys()]")

    await page.evaluate("(ids) => window.client.unsubscribe(ids)", [video.track_id])
    await wait_event(page, "track-ended", video.track_id)
    # an id nobody publishes: an error event, the page keeps working
    await page.evaluate("() => window.client.subscribe(['TR_nobody'])")
    error = await wait_event(page, "error")
    assert error["code"] == "unknown-track"
    await page.evaluate("(ids) => window.client.subscribe(ids)", [audio.track_id])
    await wait_event(page, "track", audio.track_id)
    browser.assert_no_page_errors()
