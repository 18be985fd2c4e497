"""Simulcast negotiation with real headless Chromium, through the real server's `offer` message.

The page speaks the protocol itself (docs/protocol.md; no sfu-client.js) and publishes its fake
camera at 1280x720 as three encodings, rids q/h/f scaled 4/2/1. Chromium sends every encoding only
if the server's answer takes them (a=rid recv, a=simulcast:recv); its own getStats() shows one
outbound-rtp stream per rid, whether or not the server routes their packets yet. The server's
later offers must keep the layers, or Chromium's answer drops all but one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from playwright.async_api import Page

from sfu_client.media import ToneAudioTrack
from tests.browser.conftest import Browser
from tests.e2e.conftest import ClientFactory

pytestmark = pytest.mark.browser

TIMEOUT = 30.0  # generous: two cores encode three layers, run the server and the test
RIDS = {"q", "h", "f"}

_PUBLISH_JS = """async ([room]) => {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  const waiting = new Map();
  let requests = 0;
  const request = (message) => new Promise((resolve, reject) => {
    const requestId = String(++requests);
    waiting.set(requestId, { resolve, reject });
    ws.send(JSON.stringify({ ...message, requestId }));
  });
  const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
  const log = (window.negotiation = { serverOffers: [], answers: [], errors: [] });
  window.pc = pc;
  let offerSent = false;
  const early = [];
  const sendCandidate = (c) => ws.send(JSON.stringify({ type: "candidate",
    candidate: c ? c.candidate : null, sdpMid: c ? c.sdpMid : null }));
  pc.onicecandidate = (e) => (offerSent ? sendCandidate(e.candidate) : early.push(e.candidate));
  ws.onmessage = async (event) => {
    const message = JSON.parse(event.data);
    const pending = message.requestId && waiting.get(message.requestId);
    if (pending) {
      waiting.delete(message.requestId);
      if (message.type === "error") pending.reject(new Error(message.message));
      else pending.resolve(message);
    } else if (message.type === "offer" && pc.signalingState !== "have-local-offer") {
      log.serverOffers.push(message.sdp);
      await pc.setRemoteDescription({ type: "offer", sdp: message.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      log.answers.push(pc.localDescription.sdp);
      ws.send(JSON.stringify({ type: "answer", sdp: pc.localDescription.sdp }));
    } else if (message.type === "error") {
      log.errors.push(message.message);
    }
  };
  await request({ type: "join", v: 1, room, name: "simulcast" });
  const stream = await navigator.mediaDevices.getUserMedia(
    { video: { width: { exact: 1280 }, height: { exact: 720 } } });
  const transceiver = pc.addTransceiver(stream.getVideoTracks()[0], {
    direction: "sendonly",
    sendEncodings: [{ rid: "q", scaleResolutionDownBy: 4 }, { rid: "h", scaleResolutionDownBy: 2 },
                    { rid: "f" }],
  });
  await pc.setLocalDescription(await pc.createOffer());
  const reply = request({ type: "offer", sdp: pc.localDescription.sdp,
                          tracks: { [transceiver.mid]: { source: "camera" } } });
  offerSent = true;
  early.forEach(sendCandidate);
  const answer = await reply;
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  return answer.sdp;
}"""

_OUTBOUND_JS = """async () => {
  const out = [];
  (await window.pc.getStats()).forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video") {
      out.push({ rid: s.rid ?? null, bytes: s.bytesSent ?? 0, width: s.frameWidth ?? 0,
                 active: s.active ?? null, limit: s.qualityLimitationReason ?? null });
    }
  });
  return out;
}"""


async def outbound(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.evaluate(_OUTBOUND_JS)
    return result


async def wait_layers_rising(page: Page) -> dict[str, dict[str, Any]]:
    """The page's video outbound-rtp streams by rid, once each of q/h/f sent more bytes since
    the previous sample (bounded; fails with what the stats said)."""
    deadline = time.monotonic() + TIMEOUT
    previous: dict[str | None, int] = {}
    rising: set[str] = set()
    streams: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        streams = await outbound(page)
        for stream in streams:
            rid = stream["rid"]
            if rid is not None and stream["bytes"] > previous.get(rid, stream["bytes"]):
                rising.add(rid)
            previous[rid] = stream["bytes"]
        if rising >= RIDS:
            return {s["rid"]: s for s in streams}
        await asyncio.sleep(0.5)
    raise AssertionError(f"layers with rising bytesSent: {sorted(rising)}; stats: {streams}")


def simulcast_lines(sdp: str, mid: str) -> list[str]:
    section = sdp.split(f"\r\na=mid:{mid}\r\n")[1].split("\r\nm=")[0]
    return [line for line in section.split("\r\n") if line.startswith(("a=rid:", "a=simulcast:"))]


async def test_chromium_sends_three_layers_and_keeps_them_after_server_offers(
    browser: Browser, make_client: ClientFactory, room: str
) -> None:
    page = await browser.new_page("simulcast publisher")
    await page.goto(browser.url())
    answer: str = await page.evaluate(_PUBLISH_JS, [room])
    mid = answer.split("\r\na=mid:")[1].split("\r\n")[0]
    assert simulcast_lines(answer, mid) == [
        "a=rid:q recv",
        "a=rid:h recv",
        "a=rid:f recv",
        "a=simulcast:recv q;h;f",
    ]
    layers = await wait_layers_rising(page)
    assert set(layers) == RIDS, layers

    # someone else publishes: the server offers the page an m-line for it, and keeps the layers
    other = await make_client(room, "python")
    await other.publish(ToneAudioTrack(440.0), "microphone")
    deadline = time.monotonic() + TIMEOUT
    log: dict[str, Any] = {}
    while time.monotonic() < deadline:
        log = await page.evaluate("() => window.negotiation")
        if log["answers"]:
            break
        await asyncio.sleep(0.2)
    assert log.get("answers"), f"no server offer reached the page: {log}"
    assert log["errors"] == []
    offer, reply = log["serverOffers"][0], log["answers"][0]
    assert "m=audio" in offer.split(f"a=mid:{mid}\r\n")[1]  # the new m-line
    assert simulcast_lines(offer, mid)[-1] == "a=simulcast:recv q;h;f"
    assert simulcast_lines(reply, mid)[-1] == "a=simulcast:send q;h;f"
    await asyncio.sleep(1.0)  # the renegotiation applied: every layer still goes out
    assert set(await wait_layers_rising(page)) == RIDS
    browser.assert_no_page_errors()
