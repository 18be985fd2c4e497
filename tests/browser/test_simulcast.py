"""Simulcast in real headless Chromium: a 1280x720 camera as three layers, chosen per subscriber.

The publisher page sends its fake camera as rid simulcast (320x180 / 640x360 / 1280x720, the
demo page's default at that size); the subscriber page (adaptive stream off, so the test
chooses) asks for a layer with ``setTrackSettings`` and its <video> element's frames are
timed with ``requestVideoFrameCallback``. Per switch it checks the subscriber ends up on the
layer it asked for, never shows a frame of a third layer, and that the publisher got keyframe
requests (its outbound-rtp ``pliCount``) for the layer switched to only. Freezes are Chromium's
own (``freezeCount``). The publisher keeps its resolutions (``maintain-resolution``): on a busy
machine Chromium would otherwise scale its capture down, and a layer's width would no longer
tell which layer a frame came from. Times are reported, not asserted:
``SIMULCAST_SWITCHES=24`` and ``-s`` print the distribution (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.async_api import Page

from tests.browser.conftest import Browser, wait_joined
from tests.browser.pages import received, wait_flowing
from tests.browser.simulcast_probes import RECORD_FRAMES_JS, SENT_WIDTHS_JS, WIDTHS, wait_for_layers

pytestmark = pytest.mark.browser

SWITCH_TIMEOUT = 20.0  # generous: two Chromiums encode and decode 720p on a shared 2-core machine
SWITCHES = int(os.environ.get("SIMULCAST_SWITCHES", "6"))
PUBLISHER = "pub"

_REQUEST_JS = """async ([trackId, settings]) => {
  const at = performance.now();
  await window.sfuApp.client.setTrackSettings([trackId], settings);
  return at;
}"""

_FRAMES_SINCE_JS = "(at) => window.__frames.filter(([t]) => t >= at)"

_FREEZES_JS = """async () => {
  let count = 0, duration = 0;
  for (const r of window.sfuApp.client.pc.getReceivers()) {
    if (r.track.kind !== "video") continue;
    (await r.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp") {
        count += s.freezeCount ?? 0;
        duration += s.totalFreezesDuration ?? 0;
      }
    });
  }
  return [count, duration];
}"""

_PLIS_BY_RID_JS = """async () => {
  const plis = {};
  for (const s of window.sfuApp.client.pc.getSenders()) {
    if (!s.track || s.track.kind !== "video") continue;
    (await s.getStats()).forEach((r) => {
      if (r.type === "outbound-rtp" && r.rid) plis[r.rid] = (plis[r.rid] ?? 0) + r.pliCount;
    });
  }
  return plis;
}"""


@dataclass(frozen=True, slots=True)
class Switch:
    to: int
    seconds: float  # request -> first frame of the new layer shown
    plis: dict[str, int]  # keyframe requests the publisher got per rid during the switch


async def join(browser: Browser, room: str, name: str, video: str) -> Page:
    page = await browser.new_page(name)
    query = {"room": room, "name": name, "autojoin": "1", "video": video, "fps": "15"}
    await page.goto(browser.url(**query, adaptive="0"))
    await wait_joined(page)
    return page


async def shown_widths(page: Page, since: float) -> list[int]:
    frames: list[list[float]] = await page.evaluate(_FRAMES_SINCE_JS, since)
    return [int(width) for _, width in frames]


async def switch(page: Page, publisher: Page, track_id: str, layer: int, was: int) -> Switch:
    """Ask for ``layer`` and wait until the subscriber shows it; check nothing else showed."""
    plis_before: dict[str, int] = await publisher.evaluate(_PLIS_BY_RID_JS)
    at: float = await page.evaluate(_REQUEST_JS, [track_id, {"maxLayer": layer}])
    deadline = time.monotonic() + SWITCH_TIMEOUT
    while True:
        frames: list[list[float]] = await page.evaluate(_FRAMES_SINCE_JS, at)
        widths = [int(w) for _, w in frames]
        if WIDTHS[layer] in widths:
            first = widths.index(WIDTHS[layer])
            seconds = (frames[first][0] - at) / 1000
            break
        assert time.monotonic() < deadline, f"no {WIDTHS[layer]}-wide frame: {set(widths)}"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # frames after the switch: only the new layer's
    widths = await shown_widths(page, at)
    first = widths.index(WIDTHS[layer])
    sending = await publisher.evaluate(SENT_WIDTHS_JS)
    assert set(widths[:first]) <= {WIDTHS[was]}, f"unchosen layer: {widths}, sent: {sending}"
    assert set(widths[first:]) == {WIDTHS[layer]}, f"went back or elsewhere: {widths}"
    plis_after: dict[str, int] = await publisher.evaluate(_PLIS_BY_RID_JS)
    plis = {rid: plis_after.get(rid, 0) - plis_before.get(rid, 0) for rid in plis_after}
    return Switch(layer, seconds, plis)


async def test_a_subscriber_switches_layers_of_a_chromium_simulcast_camera(
    browser: Browser, room: str
) -> None:
    publisher = await join(browser, room, PUBLISHER, "1280x720")
    subscriber = await join(browser, room, "sub", "320x180")
    rid_widths = await wait_for_layers(publisher)
    rid_of = {width: rid for rid, width in rid_widths.items()}
    tracks = await wait_flowing(subscriber, PUBLISHER, timeout=SWITCH_TIMEOUT)
    track_id = tracks["camera"].track_id
    assert await subscriber.evaluate(RECORD_FRAMES_JS, PUBLISHER), "no requestVideoFrameCallback"
    # no preference: the best layer
    deadline = time.monotonic() + SWITCH_TIMEOUT
    while (await received(subscriber, PUBLISHER))["camera"].frame_width != WIDTHS[2]:
        assert time.monotonic() < deadline, "the subscriber never got the 1280x720 layer"
        await asyncio.sleep(0.25)
    freezes_before: list[float] = await subscriber.evaluate(_FREEZES_JS)

    order = [0, 1, 2, 1, 0, 2]
    switches: list[Switch] = []
    was = 2
    for i in range(SWITCHES):
        layer = order[i % len(order)]
        result = await switch(subscriber, publisher, track_id, layer, was)
        switches.append(result)
        # keyframe requests go to the layer switched to, none to the others
        wrong = {rid: n for rid, n in result.plis.items() if n and rid != rid_of[WIDTHS[layer]]}
        assert not wrong, f"switch to {WIDTHS[layer]}: keyframe requests for {wrong}"
        was = layer
        await asyncio.sleep(1.0)  # let the layer play before the next switch

    freezes_after: list[float] = await subscriber.evaluate(_FREEZES_JS)
    freezes = freezes_after[0] - freezes_before[0]
    times = sorted(s.seconds for s in switches)
    report = {
        "switches": len(times),
        "median_s": round(statistics.median(times), 3),
        "max_s": round(times[-1], 3),
        "freezes": freezes,
        "freeze_s": round(freezes_after[1] - freezes_before[1], 3),
        "keyframe_requests_per_switch": round(
            sum(sum(s.plis.values()) for s in switches) / len(switches), 2
        ),
        "by_width": {
            WIDTHS[layer]: [round(s.seconds, 3) for s in switches if s.to == layer]
            for layer in WIDTHS
        },
    }
    print(f"\nsimulcast switches (Chromium -> aiosfu -> Chromium): {json.dumps(report)}")
    browser.assert_no_page_errors()


async def test_a_paused_track_costs_nothing_and_unwanted_layers_are_turned_off(
    browser: Browser, room: str
) -> None:
    """Paused: no packets reach the subscriber. Nobody wanting the upper layers: the publisher
    stops encoding them (its outbound-rtp bytes stall), and starts again when wanted."""
    publisher = await join(browser, room, PUBLISHER, "1280x720")
    subscriber = await join(browser, room, "sub", "320x180")
    rid_widths = await wait_for_layers(publisher)
    tracks = await wait_flowing(subscriber, PUBLISHER, timeout=SWITCH_TIMEOUT)
    track_id = tracks["camera"].track_id
    all_layers = await upload_rate(publisher)

    await subscriber.evaluate(_REQUEST_JS, [track_id, {"paused": True}])
    await asyncio.sleep(1.0)
    before = (await received(subscriber, PUBLISHER))["camera"].packets
    await asyncio.sleep(2.0)
    assert (await received(subscriber, PUBLISHER))["camera"].packets == before

    # the smallest layer only: after the server's grace the publisher turns the others off
    await subscriber.evaluate(_REQUEST_JS, [track_id, {"maxLayer": 0}])
    await wait_flowing(subscriber, PUBLISHER, ("camera",), timeout=SWITCH_TIMEOUT)
    smallest = min(rid_widths, key=lambda rid: rid_widths[rid])
    deadline = time.monotonic() + SWITCH_TIMEOUT
    while True:
        first = await sent_bytes_by_rid(publisher)
        await asyncio.sleep(1.5)
        second = await sent_bytes_by_rid(publisher)
        grew = {rid for rid in second if second[rid] > first.get(rid, 0)}
        if grew == {smallest}:
            break
        assert time.monotonic() < deadline, f"layers still sent: {grew}"
    smallest_only = await upload_rate(publisher)
    print(
        f"\npublisher upload: {all_layers / 1000:.0f} kbit/s with every layer, "
        f"{smallest_only / 1000:.0f} kbit/s with the smallest only"
    )

    await subscriber.evaluate(_REQUEST_JS, [track_id, {}])
    deadline = time.monotonic() + SWITCH_TIMEOUT
    while (await received(subscriber, PUBLISHER))["camera"].frame_width != WIDTHS[2]:
        assert time.monotonic() < deadline, "the top layer never came back"
        await asyncio.sleep(0.25)
    browser.assert_no_page_errors()


async def upload_rate(publisher: Page, seconds: float = 2.0) -> float:
    """The publisher's video upload over ``seconds``, bit/s (all its layers)."""
    first = await sent_bytes_by_rid(publisher)
    await asyncio.sleep(seconds)
    second = await sent_bytes_by_rid(publisher)
    return sum(second[rid] - first.get(rid, 0) for rid in second) * 8 / seconds


async def sent_bytes_by_rid(publisher: Page) -> dict[str, int]:
    rows: dict[str, Any] = await publisher.evaluate(
        """async () => {
          const bytes = {};
          for (const s of window.sfuApp.client.pc.getSenders()) {
            if (!s.track || s.track.kind !== "video") continue;
            (await s.getStats()).forEach((r) => {
              if (r.type === "outbound-rtp" && r.rid) bytes[r.rid] = r.bytesSent;
            });
          }
          return bytes;
        }"""
    )
    return {rid: int(value) for rid, value in rows.items()}


async def test_adaptive_stream_picks_the_layer_of_the_tile_size(
    browser: Browser, room: str
) -> None:
    """The demo page with adaptive stream on (its default): the tile's size, reported by
    sfu-client.js, chooses the layer — the smallest at least as wide as the tile (a 960-wide
    window's tile gets the 640x360 layer, a narrow window's the 320x180 one, a wide one's the
    1280x720 one)."""
    publisher = await join(browser, room, PUBLISHER, "1280x720")
    subscriber = await browser.new_page("sub")
    query = {"room": room, "name": "sub", "autojoin": "1", "video": "320x180", "fps": "15"}
    await subscriber.goto(browser.url(**query))
    await wait_joined(subscriber)
    await wait_for_layers(publisher)
    seen = set()
    for viewport in ((960, 600), (300, 600), (2600, 1500)):
        await subscriber.set_viewport_size({"width": viewport[0], "height": viewport[1]})
        await asyncio.sleep(0.5)  # the grid lays out again
        tile: float = await subscriber.evaluate(
            """(name) => document.querySelector(
                 `#grid .tile[data-name="${name}"][data-source="camera"] video`
               ).getBoundingClientRect().width""",
            PUBLISHER,
        )
        # the layer the page should get: the smallest at least as wide as the tile
        expected = min((w for w in WIDTHS.values() if w >= tile), default=WIDTHS[2])
        seen.add(expected)
        deadline = time.monotonic() + SWITCH_TIMEOUT
        while (await received(subscriber, PUBLISHER)).get("camera") is None or (
            await received(subscriber, PUBLISHER)
        )["camera"].frame_width != expected:
            assert time.monotonic() < deadline, f"tile {tile:.0f} px wide: not {expected}"
            await asyncio.sleep(0.25)
    assert seen == set(WIDTHS.values()), f"the window sizes did not cover every layer: {seen}"
    browser.assert_no_page_errors()


_FRAMES_DECODED_JS = """async () => {
  let frames = 0;
  for (const r of window.sfuApp.client.pc.getReceivers()) {
    if (r.track.kind !== "video") continue;
    (await r.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp") frames += s.framesDecoded;
    });
  }
  return frames;
}"""

_SCALABILITY_JS = """async () => {
  const modes = {};
  for (const s of window.sfuApp.client.pc.getSenders()) {
    if (!s.track || s.track.kind !== "video") continue;
    (await s.getStats()).forEach((r) => {
      if (r.type === "outbound-rtp" && r.rid) modes[r.rid] = r.scalabilityMode ?? null;
    });
  }
  return modes;
}"""


async def decoded_rate(page: Page, seconds: float = 3.0) -> float:
    first: int = await page.evaluate(_FRAMES_DECODED_JS)
    await asyncio.sleep(seconds)
    second: int = await page.evaluate(_FRAMES_DECODED_JS)
    return (second - first) / seconds


async def test_temporal_layers_above_the_chosen_one_are_dropped(
    browser: Browser, room: str
) -> None:
    """Chromium encodes each simulcast layer with temporal layers (L1T3 here): asking for the
    base temporal layer only lowers the frame rate the subscriber decodes (a quarter); asking
    for all again restores it (going up waits for a layer-sync frame), without a freeze.
    (Chromium counts the step down itself as one: a frame interval over three times the
    average is its definition of a freeze.)"""
    publisher = await join(browser, room, PUBLISHER, "1280x720")
    subscriber = await join(browser, room, "sub", "320x180")
    await wait_for_layers(publisher)
    modes: dict[str, str | None] = await publisher.evaluate(_SCALABILITY_JS)
    tracks = await wait_flowing(subscriber, PUBLISHER, timeout=SWITCH_TIMEOUT)
    track_id = tracks["camera"].track_id
    await subscriber.evaluate(_REQUEST_JS, [track_id, {"maxLayer": 1}])
    await asyncio.sleep(1.0)
    full = await decoded_rate(subscriber)
    await subscriber.evaluate(_REQUEST_JS, [track_id, {"maxLayer": 1, "maxTemporalLayer": 0}])
    await asyncio.sleep(1.0)
    base = await decoded_rate(subscriber)
    freezes_before: list[float] = await subscriber.evaluate(_FREEZES_JS)
    await subscriber.evaluate(_REQUEST_JS, [track_id, {"maxLayer": 1}])
    await asyncio.sleep(1.0)
    again = await decoded_rate(subscriber)
    freezes_after: list[float] = await subscriber.evaluate(_FREEZES_JS)
    print(
        f"\ntemporal layers {modes}: {full:.1f} fps, base layer only {base:.1f}, again {again:.1f}"
    )
    assert base < full * 0.6, f"base temporal layer only: {base:.1f} fps of {full:.1f}"
    assert again > full * 0.8, f"all temporal layers again: {again:.1f} fps of {full:.1f}"
    assert freezes_after[0] == freezes_before[0], "a freeze going back to every temporal layer"
    browser.assert_no_page_errors()
