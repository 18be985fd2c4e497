"""sfu-client.js reconnecting by itself, in real headless Chromium, through the real server.

The page is loaded through a TCP proxy the test cuts (tests/e2e/outage.py), so that its signaling
WebSocket drops the way it does when a network is lost: no close handshake, and new connections
refused until the proxy is restored. Media goes over UDP, which the proxy does not carry: it
keeps flowing through the outage. A Python client publishes what the page receives. Timings are
printed (run with -s), never asserted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from playwright.async_api import Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from sfu_client import PALETTE, FrameProbe, MarkerVideoTrack, SfuClient
from tests.browser.conftest import CAPTURE, Browser, wait_joined
from tests.browser.pages import wait_flowing
from tests.e2e.conftest import ClientFactory, SfuServer
from tests.e2e.outage import CuttableProxy

pytestmark = pytest.mark.browser

WIDTH, HEIGHT, FPS = 160, 120, 15
OUTAGE = 3.0
SHORT_WINDOW = 2.0  # the server's resume window in the rejoin test: shorter than the outage
TIMEOUT = 25.0  # generous: two cores run the server, Chromium and the Python client

# the page's client's reconnection events, with their time (ms since the epoch)
_RECORD_JS = """
() => {
  window.reconnects = [];
  for (const type of ["reconnecting", "reconnected", "closed"]) {
    window.sfuApp.client.addEventListener(type, (e) => {
      window.reconnects.push({ ...e.detail, type, at: Date.now() });
    });
  }
}
"""

# when (ms since the epoch) the page decodes a new frame of participant `name`'s `source`: of
# the track it receives now, or of the one it receives next (a new one, or on a new connection)
_NEXT_FRAME_JS = """
async ([name, source, timeoutMs]) => {
  const client = window.sfuApp.client;
  const count = async () => {
    const participant = [...client.participants.values()].find((p) => p.name === name);
    const remote = participant && [...client.remoteTracks.values()].find(
      (r) => r.participantId === participant.participantId && r.source === source);
    if (!remote || !client.pc) return null;
    const report = await client.pc.getStats();
    let frames = 0;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.mid === remote.mid) frames = s.framesDecoded || 0;
    });
    return { pc: client.pc, trackId: remote.trackId, frames };
  };
  const start = await count();
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const now = await count();
    const same = start && now && start.pc === now.pc && start.trackId === now.trackId;
    if (now && now.frames > (same ? start.frames : 0)) return Date.now();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return null;
}
"""


async def proxied_page(browser: Browser, proxy: CuttableProxy, room: str, name: str) -> Page:
    """A page loaded through ``proxy`` (its WebSocket goes there too) that joined and publishes."""
    page = await browser.new_page(name)
    query = urlencode({"room": room, "name": name, "autojoin": "1", **CAPTURE})
    await page.goto(f"http://127.0.0.1:{proxy.port}/?{query}")
    await wait_joined(page)
    await page.evaluate(_RECORD_JS)
    return page


async def start_proxy(server: SfuServer) -> CuttableProxy:
    target = urlsplit(server.url)
    proxy = CuttableProxy(target.hostname or "127.0.0.1", target.port or 80)
    await proxy.start()
    return proxy


async def reconnects(page: Page) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await page.evaluate("() => window.reconnects")
    return events


async def wait_reconnected(page: Page) -> dict[str, Any]:
    try:
        await page.wait_for_function(
            "() => window.reconnects.some((e) => e.type !== 'reconnecting')",
            timeout=TIMEOUT * 1000,
        )
    except PlaywrightTimeoutError:
        raise AssertionError(f"not reconnected: {await reconnects(page)}") from None
    events = await reconnects(page)
    assert [e["type"] for e in events] == ["reconnecting", "reconnected"], events
    return events[1]


async def next_frame(page: Page, name: str, source: str) -> float:
    """Time (s since the epoch) of the next frame of ``name``'s ``source`` the page decodes."""
    at: float | None = await page.evaluate(_NEXT_FRAME_JS, [name, source, TIMEOUT * 1000])
    assert at is not None, f"no new {source} frame from {name} within {TIMEOUT} s"
    return at / 1000


async def receives_video(client: SfuClient, participant_id: str) -> None:
    """``client`` decodes frames of a video track of ``participant_id``."""
    remote = await client.wait_for_track(participant_id, "video", TIMEOUT)
    remote.drain()
    probe = await FrameProbe(remote.track).run(count=3, timeout=TIMEOUT)
    assert len(probe.records) == 3, f"{client.name} got {len(probe.records)} frames"


def left_or_joined(client: SfuClient, since: int) -> list[tuple[str, str]]:
    """The participant-left / participant-joined ``client`` got after ``history[since]``."""
    return [
        (m.type, str(m.data.get("participantId") or m.data["participant"]["participantId"]))
        for m in client.history[since:]
        if m.type in ("participant-left", "participant-joined")
    ]


async def test_page_resumes_after_its_websocket_drops(
    browser: Browser, make_client: ClientFactory, sfu_server: SfuServer, room: str
) -> None:
    proxy = await start_proxy(sfu_server)
    try:
        publisher = await make_client(room, "publisher")
        await publisher.publish(MarkerVideoTrack(PALETTE[0], WIDTH, HEIGHT, FPS), "camera")
        page = await proxied_page(browser, proxy, room, "viewer")
        await wait_flowing(page, "publisher", ("camera",))
        viewer_id = await page.evaluate("() => window.sfuApp.client.participantId")
        mic_id = await page.evaluate("() => window.sfuApp.local.mic.trackId")
        history_at_cut = len(publisher.history)

        cut_at = time.time()
        proxy.cut()
        await expect(page.locator("#connection-status")).to_have_text("Reconnecting…")
        # while the page is away it mutes its microphone (sent after the resume), and the
        # publisher shares a screen (replayed to the page: track-published, a server offer)
        await page.evaluate("() => window.sfuApp.client.setMuted(window.sfuApp.local.mic, true)")
        await publisher.publish(MarkerVideoTrack(PALETTE[1], WIDTH, HEIGHT, FPS), "screen")
        await asyncio.sleep(max(0.0, cut_at + OUTAGE - time.time()))
        proxy.restore()
        restored_at = time.time()

        back = await wait_reconnected(page)
        screen_at = await next_frame(page, "publisher", "screen")
        print(
            f"cut → reconnected {back['at'] / 1000 - cut_at:.2f} s, restore → reconnected"
            f" {back['at'] / 1000 - restored_at:.2f} s, restore → first screen frame"
            f" {screen_at - restored_at:.2f} s; {back}"
        )
        assert back["how"] == "resumed", back
        assert back["participantId"] == viewer_id
        assert back["replayed"] >= 2, back  # at least track-published and the server's offer
        await expect(page.locator("#connection-status")).to_have_text("Reconnected")
        await wait_flowing(page, "publisher", ("camera", "screen"))
        # what the page sent while away arrived
        await publisher.wait_for_message("track-muted", TIMEOUT, trackId=mic_id, muted=True)
        # and nobody saw it leave or join again
        assert left_or_joined(publisher, history_at_cut) == []
        assert viewer_id in publisher.participants
        state = await page.evaluate(
            "() => { const c = window.sfuApp.client;"
            " return { id: c.participantId, resumes: c.resumes, rejoins: c.rejoins }; }"
        )
        assert state == {"id": viewer_id, "resumes": 1, "rejoins": 0}
        browser.assert_no_page_errors()
    finally:
        await proxy.close()


@pytest.mark.parametrize("server_env", [{"SFU_RESUME_WINDOW": str(SHORT_WINDOW)}])
async def test_page_joins_again_when_its_session_cannot_be_resumed(
    browser: Browser, make_client: ClientFactory, sfu_server: SfuServer, room: str
) -> None:
    proxy = await start_proxy(sfu_server)
    try:
        publisher = await make_client(room, "publisher")
        await publisher.publish(MarkerVideoTrack(PALETTE[0], WIDTH, HEIGHT, FPS), "camera")
        page = await proxied_page(browser, proxy, room, "viewer")
        await wait_flowing(page, "publisher", ("camera",))
        old_id = await page.evaluate("() => window.sfuApp.client.participantId")
        old_camera = await page.evaluate("() => window.sfuApp.local.camera.trackId")
        history_at_cut = len(publisher.history)

        cut_at = time.time()
        proxy.cut()
        await expect(page.locator("#connection-status")).to_have_text("Reconnecting…")
        # the server gives the page up after its resume window
        await publisher.wait_for_message("participant-left", TIMEOUT, participantId=old_id)
        await asyncio.sleep(max(0.0, cut_at + SHORT_WINDOW + 1.0 - time.time()))
        proxy.restore()
        restored_at = time.time()

        back = await wait_reconnected(page)
        camera_at = await next_frame(page, "publisher", "camera")
        print(
            f"cut → reconnected {back['at'] / 1000 - cut_at:.2f} s, restore → reconnected"
            f" {back['at'] / 1000 - restored_at:.2f} s, restore → first camera frame"
            f" {camera_at - restored_at:.2f} s; {back}"
        )
        assert back["how"] == "rejoined", back
        new_id = back["participantId"]
        assert new_id and new_id != old_id
        await expect(page.locator("#connection-status")).to_have_text("Reconnected (joined again)")
        await wait_flowing(page, "publisher", ("camera",))
        # the page published its camera again: a new track id, which the publisher receives
        new_camera = await page.evaluate("() => window.sfuApp.local.camera.trackId")
        assert new_camera and new_camera != old_camera
        await receives_video(publisher, new_id)
        assert left_or_joined(publisher, history_at_cut) == [
            ("participant-left", old_id),
            ("participant-joined", new_id),
        ]
        # the page's tiles follow: the publisher's tile plays again, no tile is left over
        tiles = page.locator('#grid .tile[data-source="camera"]')
        await expect(tiles).to_have_count(2)
        browser.assert_no_page_errors()
    finally:
        await proxy.close()


async def test_page_resumes_when_the_browser_is_online_again(
    browser: Browser, make_client: ClientFactory, room: str
) -> None:
    """A network change (the browser's ``online`` event) may leave the old socket dead without
    anyone noticing for a while: the page resumes on a new one at once. The event is dispatched
    by the test: in a namespace with only loopback Chromium considers itself offline from the
    start (``navigator.onLine`` is false), so ``set_offline()`` fires nothing."""
    publisher = await make_client(room, "publisher")
    await publisher.publish(MarkerVideoTrack(PALETTE[0], WIDTH, HEIGHT, FPS), "camera")
    page = await browser.join(room, "viewer")
    await page.evaluate(_RECORD_JS)
    await wait_flowing(page, "publisher", ("camera",))
    viewer_id = await page.evaluate("() => window.sfuApp.client.participantId")
    history_at_change = len(publisher.history)

    online_at = time.time()
    await page.evaluate("() => window.dispatchEvent(new Event('online'))")

    back = await wait_reconnected(page)
    print(f"online → reconnected {back['at'] / 1000 - online_at:.2f} s; {back}")
    events = await reconnects(page)
    assert events[0]["reason"] == "network changed", events
    assert back["how"] == "resumed" and back["participantId"] == viewer_id, back
    await wait_flowing(page, "publisher", ("camera",))
    assert left_or_joined(publisher, history_at_change) == []
    browser.assert_no_page_errors()
