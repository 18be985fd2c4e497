"""Simulcast with real headless Firefox (Debian's firefox-esr, over Marionette; see firefox.py).

Firefox publishes rid simulcast unlike Chromium: its offer lists ``a=ssrc`` lines for all six
layer SSRCs and puts every m-line after the first at port 0 with ``a=bundle-only``; it offers
no H264, so its layers are VP8. Answering a server offer made while its DTLS handshake is
under way, it says setup:active in the new m-lines (the server keeps the tagged m-line's
role). Its fake camera honours the demo page's 1280x720 constraint, and the demo's encodings
(scaled 4/2/1) make three layers 320, 640 and 1280 wide.

- A Firefox publisher's layers reach a Chromium and a Firefox subscriber: each gets the best
  layer unasked, then each layer it asks for (``setTrackSettings`` maxLayer) and only that one.
  Layers nobody wants are turned off at the Firefox publisher, and on again when wanted.
- A Chromium publisher's layers reach a Firefox subscriber, which switches between them.

A subscriber's shown frames are timed with ``requestVideoFrameCallback`` (both browsers have
it): after a switch request it must show the asked layer's width, frames before that only of
the layer it had (or those between, on the way), and after it nothing else. Subscribers capture
320x180 (one encoding), so two browsers, their codecs and the server fit on two cores; Firefox's
own send-side estimate is kept from falling (firefox.py), or it would drop its top layer when
starved of CPU.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Browser, _unavailable, wait_joined
from tests.browser.firefox import Firefox, FirefoxPage, firefox_missing, running_firefox
from tests.browser.simulcast_probes import (
    RECORD_FRAMES_JS,
    WIDTHS,
    Evaluates,
    wait_for_layers,
)
from tests.e2e.conftest import SfuServer

pytestmark = pytest.mark.browser

TIMEOUT = 20.0  # generous: two browsers encode and decode 720p on a shared 2-core machine
SETTLE = 0.6  # seconds of frames looked at after a switch: only the new layer's


@pytest.fixture
def firefox(
    sfu_server: SfuServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Firefox]:
    """One Firefox in this test's namespace (``sfu_server`` made it)."""
    reason = firefox_missing()
    if reason:
        _unavailable(reason)
    with running_firefox(tmp_path) as firefox:
        request.node.firefox = firefox  # its console goes in the report of a failure
        yield firefox


def page_url(server: SfuServer, room: str, name: str, video: str) -> str:
    query = f"room={room}&name={name}&autojoin=1&video={video}&fps=15&adaptive=0"
    return f"{server.url}/?{query}"


async def join_firefox(
    firefox: Firefox, server: SfuServer, room: str, name: str, video: str
) -> FirefoxPage:
    page = await firefox.new_page(name)
    await page.goto(page_url(server, room, name, video))
    await page.wait_for_function(_JOINED_JS, TIMEOUT)
    return page


async def join_chromium(browser: Browser, room: str, name: str, video: str) -> Evaluates:
    page = await browser.new_page(name)
    await page.goto(page_url(browser.server, room, name, video))
    await wait_joined(page)
    return page


_JOINED_JS = """() => { const a = window.sfuApp; return Boolean(a && a.client
  && a.client.participantId && a.local.mic && a.local.mic.trackId && a.local.camera
  && a.local.camera.trackId); }"""

# the camera of participant `name` as this page receives it: its track id, and what its
# receiver's inbound-rtp says (frameWidth, framesDecoded; the rest for the report of a failure)
_CAMERA_JS = """async (name) => {
  const client = window.sfuApp.client;
  const p = [...client.participants.values()].find((p) => p.name === name);
  const remote = p && [...client.remoteTracks.values()].find(
    (r) => r.participantId === p.participantId && r.source === "camera");
  if (!remote) return null;
  const camera = {trackId: remote.trackId, width: 0, decoded: 0};
  (await remote.receiver.getStats()).forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    Object.assign(camera, {width: s.frameWidth ?? 0, decoded: s.framesDecoded ?? 0,
      packets: s.packetsReceived, keyframes: s.keyFramesDecoded, plis: s.pliCount,
      ssrc: s.ssrc});
  });
  return camera;
}"""

# for the report of a failure: the page's m-lines and what arrives on each
_CONNECTION_JS = """async () => {
  const pc = window.sfuApp.client.pc;
  const packets = {};
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp") packets[s.mid ?? s.ssrc] = s.packetsReceived;
  });
  return {
    state: pc.connectionState, signaling: pc.signalingState,
    transceivers: pc.getTransceivers().map(
      (t) => `${t.mid} ${t.currentDirection} ${t.receiver.track.kind}`),
    receiving: window.sfuApp.client._receiving, packets,
    remote: pc.remoteDescription && pc.remoteDescription.sdp,
  };
}"""

_REQUEST_JS = """([trackId, settings]) => {
  window.sfuApp.client.setTrackSettings([trackId], settings);
  return performance.now();
}"""

_WIDTHS_SINCE_JS = "(at) => window.__frames.filter(([t]) => t >= at).map(([, w]) => w)"


async def wait_camera(page: Evaluates, publisher: str, width: int) -> str:
    """Wait until ``page`` decodes ``publisher``'s camera at ``width``; its track id."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        camera: dict[str, Any] | None = await page.evaluate(_CAMERA_JS, publisher)
        if camera and camera["width"] == width and camera["decoded"] > 0:
            return str(camera["trackId"])
        if time.monotonic() > deadline:
            state = await page.evaluate(_CONNECTION_JS)
            raise AssertionError(f"no {width}-wide frame from {publisher}: {camera}; {state}")
        await asyncio.sleep(0.25)


async def switch(page: Evaluates, publisher: str, track_id: str, layer: int, was: int) -> int:
    """Ask for ``layer``; wait until it is shown, check that meanwhile only the layer before and
    those between were shown, in order, and only it afterwards. Returns the frame width the
    receiver's statistics give then (measured apart from the frames shown).

    A layer between is no error: two browsers and the server share two cores, the server's
    estimate for a subscriber dips now and then (delay from a starved CPU reads as queueing),
    and going up it then takes the layer that fits first."""
    at: float = await page.evaluate(_REQUEST_JS, [track_id, {"maxLayer": layer}])
    want = WIDTHS[layer]
    deadline = time.monotonic() + TIMEOUT
    widths: list[int] = await page.evaluate(_WIDTHS_SINCE_JS, at)
    while want not in widths:
        assert time.monotonic() < deadline, f"no {want}-wide frame after asking: {set(widths)}"
        await asyncio.sleep(0.1)
        widths = await page.evaluate(_WIDTHS_SINCE_JS, at)
    await asyncio.sleep(SETTLE)
    widths = await page.evaluate(_WIDTHS_SINCE_JS, at)
    first = widths.index(want)
    before = widths[:first]
    allowed = {WIDTHS[i] for i in range(min(was, layer), max(was, layer) + 1)}
    assert set(before) <= allowed, f"a layer not asked for was shown: {widths}"
    toward = before if layer > was else [-w for w in before]
    assert toward == sorted(toward), f"went away from the layer asked for: {widths}"
    assert set(widths[first:]) == {want}, f"went back or elsewhere after the switch: {widths}"
    camera: dict[str, Any] = await page.evaluate(_CAMERA_JS, publisher)
    return int(camera["width"])


async def sweep(page: Evaluates, publisher: str, order: list[int]) -> tuple[str, dict[int, int]]:
    """The best layer unasked, then each layer of ``order``: the track's id, and for each
    layer the frame width the receiver's statistics gave."""
    track_id = await wait_camera(page, publisher, WIDTHS[2])
    assert await page.evaluate(RECORD_FRAMES_JS, publisher), "no requestVideoFrameCallback"
    shown = {}
    was = 2
    for layer in order:
        shown[layer] = await switch(page, publisher, track_id, layer, was)
        was = layer
    return track_id, shown


# frames each of the publisher's layers has encoded so far, by rid
_ENCODED_JS = """async () => {
  const frames = {};
  for (const s of window.sfuApp.client.pc.getSenders()) {
    if (!s.track || s.track.kind !== "video") continue;
    (await s.getStats()).forEach((r) => {
      if (r.type === "outbound-rtp" && r.rid) frames[r.rid] = r.framesEncoded ?? 0;
    });
  }
  return frames;
}"""


async def wait_encoding(publisher: Evaluates, rids: set[str]) -> None:
    """Wait until the publisher encodes exactly the layers ``rids`` (the server has a grace of
    10 s before it turns an unwanted layer off: sfu.media.layer_selector.UNWANTED_GRACE)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        before: dict[str, int] = await publisher.evaluate(_ENCODED_JS)
        await asyncio.sleep(1.5)
        after: dict[str, int] = await publisher.evaluate(_ENCODED_JS)
        encoding = {rid for rid, frames in after.items() if frames > before.get(rid, 0)}
        if encoding == rids:
            return
        assert time.monotonic() < deadline, f"encodes {encoding}, not {rids}"


def assert_no_problems(browser: Browser, firefox: Firefox) -> None:
    browser.assert_no_page_errors()
    assert not firefox.problems(), f"the Firefox pages reported problems: {firefox.problems()}"


async def test_a_firefox_publishers_layers_reach_chromium_and_firefox_subscribers(
    browser: Browser, firefox: Firefox, room: str
) -> None:
    publisher = await join_firefox(firefox, browser.server, room, "ffpub", "1280x720")
    sent = await wait_for_layers(publisher)
    on_chromium = await join_chromium(browser, room, "crsub", "320x180")
    on_firefox = await join_firefox(firefox, browser.server, room, "ffsub", "320x180")
    on_chromium_id, by_chromium = await sweep(on_chromium, "ffpub", [0, 1, 2])
    on_firefox_id, by_firefox = await sweep(on_firefox, "ffpub", [1, 0, 2])
    assert by_chromium == by_firefox == WIDTHS
    print(f"\nFirefox -> aiosfu: sent {json.dumps(sent)}, shown {by_chromium} {by_firefox}")

    # nobody wants more than the smallest layer: Firefox is told to stop the others
    # (publisherLayers: sfu-client.js sets their encodings inactive), and to send them again
    await on_chromium.evaluate(_REQUEST_JS, [on_chromium_id, {"maxLayer": 0}])
    await on_firefox.evaluate(_REQUEST_JS, [on_firefox_id, {"maxLayer": 0}])
    await wait_encoding(publisher, {min(sent, key=lambda rid: sent[rid])})
    await on_firefox.evaluate(_REQUEST_JS, [on_firefox_id, {}])
    await wait_encoding(publisher, set(sent))
    await wait_camera(on_firefox, "ffpub", WIDTHS[2])
    assert_no_problems(browser, firefox)


async def test_a_chromium_publishers_layers_reach_a_firefox_subscriber(
    browser: Browser, firefox: Firefox, room: str
) -> None:
    # the subscriber first: layers nobody receives are turned off after 10 s, and on a busy
    # machine Chromium's estimate may take that long to allow all three. Joined second, the
    # Chromium page may answer the server's offer of the Firefox page's tracks before it makes
    # its own simulcast offer (test_simulcast_after_receiving.py has that order for certain)
    subscriber = await join_firefox(firefox, browser.server, room, "ffsub", "320x180")
    publisher = await join_chromium(browser, room, "crpub", "1280x720")
    sent = await wait_for_layers(publisher)
    _, shown = await sweep(subscriber, "crpub", [0, 1, 2, 0])
    assert shown == WIDTHS
    print(f"\nChromium -> aiosfu -> Firefox: sent {json.dumps(sent)}, shown {shown}")
    assert_no_problems(browser, firefox)
