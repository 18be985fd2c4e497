"""Chromium publishes simulcast on a connection that already receives or publishes, and
receives after it published simulcast, through the real server (docs/protocol.md section 8,
spoken by the page itself; no sfu-client.js).

Chromium (156) offers on a new m-section only the header extensions its BUNDLE group already
negotiated, once it has answered an offer with video or had its own video answered, and checks
its own offer: a simulcast m-section without the rid extension (RFC 8852) is refused ("negotiates
simulcast but does not negotiate the RID RTP header extension"). So the server must have
negotiated rid on the video m-lines it offers and on those it answers.

- Per round, in a room of its own: page A publishes a microphone and a three-layer simulcast
  camera (rids q/h/f, RFC 8853) first; page B joins, answers the server's offer of A's tracks,
  and only then publishes the same; A then answers the server's offer of B's tracks. Each page
  must accept every description, the server must take all three layers of each, A must keep
  sending them, and each must receive the other's camera (simulcast packets are routed by
  their rid). Ten rounds, so that an order that failed one run in two cannot pass by luck.
- A page that published a microphone, or a microphone and a single-stream camera, then
  publishes a simulcast video.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from playwright.async_api import Page

from tests.browser.conftest import Browser

pytestmark = pytest.mark.browser

ROUNDS = 10
TIMEOUT = 20.0  # generous: two pages encode three small layers each on a shared 2-core machine
LAYERS = "q;h;f"

# A participant that speaks the protocol: join, publish, answer server offers (perfect
# negotiation with the page impolite: a server offer that arrives while its own offer waits is
# dropped, the server offers again after the answer). Everything negotiated is kept in `log`.
_PARTICIPANT_JS = """() => {
  window.participants = {};
  window.startParticipant = async ([room, name]) => {
    const ws = new WebSocket(`ws://${location.host}/ws`);
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
    const log = { serverOffers: [], answers: [], offers: [], serverAnswers: [], errors: [] };
    const waiting = new Map();
    let requests = 0, offering = false, chain = Promise.resolve();
    const queue = (step) => (chain = chain.then(step).catch((e) => log.errors.push(String(e))));
    const request = (message) => new Promise((resolve, reject) => {
      const requestId = String(++requests);
      waiting.set(requestId, { resolve, reject });
      ws.send(JSON.stringify({ ...message, requestId }));
    });
    pc.onicecandidate = (e) => ws.send(JSON.stringify({ type: "candidate",
      candidate: e.candidate ? e.candidate.candidate : null,
      sdpMid: e.candidate ? e.candidate.sdpMid : null }));
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      const pending = message.requestId && waiting.get(message.requestId);
      if (pending) {
        waiting.delete(message.requestId);
        if (message.type === "error") pending.reject(new Error(message.message));
        else pending.resolve(message);
      } else if (message.type === "offer" && !offering) {
        queue(async () => {
          if (offering) return;
          log.serverOffers.push(message.sdp);
          await pc.setRemoteDescription({ type: "offer", sdp: message.sdp });
          await pc.setLocalDescription(await pc.createAnswer());
          log.answers.push(pc.localDescription.sdp);
          ws.send(JSON.stringify({ type: "answer", sdp: pc.localDescription.sdp }));
        });
      } else if (message.type === "error") {
        log.errors.push(message.message);
      }
    };
    // tracks: [{source, simulcast}]; the microphone, or a clone of the fake camera
    const publish = (tracks) => { offering = true; return queue(async () => {
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true,
          video: { width: { exact: 640 }, height: { exact: 360 } } });
        const added = tracks.map(({ source, simulcast }) => [source, simulcast,
          pc.addTransceiver(source === "microphone" ? stream.getAudioTracks()[0]
            : stream.getVideoTracks()[0].clone(), { direction: "sendonly",
            sendEncodings: simulcast ? [{ rid: "q", scaleResolutionDownBy: 4 },
              { rid: "h", scaleResolutionDownBy: 2 }, { rid: "f" }] : undefined })]);
        const offer = await pc.createOffer();
        log.offers.push(offer.sdp);
        await pc.setLocalDescription(offer);
        const labels = Object.fromEntries(added.map(([source, , t]) => [t.mid, { source }]));
        const answer = await request({ type: "offer", sdp: pc.localDescription.sdp,
          tracks: labels });
        log.serverAnswers.push(answer.sdp);
        await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
        log.simulcastMids = added.filter(([, simulcast]) => simulcast).map(([, , t]) => t.mid);
      } finally {
        offering = false;
      }
    }); };
    await request({ type: "join", v: 1, room, name });
    window.participants[name] = { ws, pc, log, publish };
  };
}"""

_PUBLISH_JS = "([name, tracks]) => window.participants[name].publish(tracks)"
_LOG_JS = "(name) => window.participants[name].log"
_CLOSE_JS = """(name) => { const p = window.participants[name];
  p.pc.getSenders().forEach((s) => s.track && s.track.stop());
  p.pc.close(); p.ws.close(); delete window.participants[name]; }"""

# video packets that reached `name` (what it receives)
_VIDEO_RECEIVED_JS = """async (name) => {
  let packets = 0;
  (await window.participants[name].pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") packets += s.packetsReceived ?? 0;
  });
  return packets;
}"""


def sections(sdp: str) -> list[str]:
    return sdp.split("\r\nm=")[1:]


def section_of(sdp: str, mid: str) -> str:
    return next(s for s in sections(sdp) if f"\r\na=mid:{mid}\r\n" in s)


def simulcast_line(sdp: str, mid: str) -> str | None:
    lines = section_of(sdp, mid).split("\r\n")
    return next((line for line in lines if line.startswith("a=simulcast:")), None)


async def log_of(page: Page, name: str) -> dict[str, Any]:
    log: dict[str, Any] = await page.evaluate(_LOG_JS, name)
    return log


async def wait_log(page: Page, name: str, what: str, check: Any) -> dict[str, Any]:
    """``name``'s log once ``check(log)`` holds (bounded; fails with the log)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        log = await log_of(page, name)
        if log["errors"] or check(log):
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: {what} did not happen; {describe(log)}")
        await asyncio.sleep(0.1)


def describe(log: dict[str, Any]) -> str:
    """The errors, and the last of each kind of description, for the report of a failure."""
    last = {k: v[-1] for k, v in log.items() if isinstance(v, list) and v and k != "errors"}
    texts = "\n".join(f"--- last of {k}:\n{sdp}" for k, sdp in last.items())
    return f"errors: {log['errors']}\n{texts}"


MIC_AND_CAMERA: list[dict[str, Any]] = [
    {"source": "microphone"},
    {"source": "camera", "simulcast": True},
]


async def publish(page: Page, name: str, tracks: list[dict[str, Any]]) -> dict[str, Any]:
    """``name`` publishes ``tracks``; checks the server took every layer of each simulcast one."""
    await page.evaluate(_PUBLISH_JS, [name, tracks])
    log = await log_of(page, name)
    assert not log["errors"], f"{name} could not publish: {describe(log)}"
    for mid in log["simulcastMids"]:
        assert simulcast_line(log["offers"][-1], mid) == f"a=simulcast:send {LAYERS}"
        taken = simulcast_line(log["serverAnswers"][-1], mid)
        assert taken == f"a=simulcast:recv {LAYERS}", f"{name}'s layers not all taken: {taken}"
    return log


async def wait_video_received(page: Page, name: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while await page.evaluate(_VIDEO_RECEIVED_JS, name) == 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} received no video: {describe(await log_of(page, name))}")
        await asyncio.sleep(0.2)


async def one_round(page: Page, room: str) -> None:
    await page.evaluate("([room, name]) => window.startParticipant([room, name])", [room, "a"])
    a = await publish(page, "a", MIC_AND_CAMERA)

    # B receives first: it answers the server's offer of A's microphone and camera
    await page.evaluate("([room, name]) => window.startParticipant([room, name])", [room, "b"])
    b = await wait_log(page, "b", "an answer to the offer of a's tracks", lambda g: g["answers"])
    assert not b["errors"], f"b could not take the offer of a's tracks: {describe(b)}"
    assert len(sections(b["answers"][0])) == 2
    await publish(page, "b", MIC_AND_CAMERA)

    # A published first: it answers the server's offer of B's tracks, keeping its own layers
    a = await wait_log(
        page,
        "a",
        "an answer to the offer of b's tracks",
        lambda g: any(len(sections(sdp)) == 4 for sdp in g["answers"]),
    )
    assert not a["errors"], f"a could not take the offer of b's tracks: {describe(a)}"
    (camera,) = a["simulcastMids"]
    assert simulcast_line(a["serverOffers"][-1], camera) == f"a=simulcast:recv {LAYERS}"
    assert simulcast_line(a["answers"][-1], camera) == f"a=simulcast:send {LAYERS}"

    await wait_video_received(page, "a")
    await wait_video_received(page, "b")
    for name in ("a", "b"):
        assert not (await log_of(page, name))["errors"]
        await page.evaluate(_CLOSE_JS, name)


async def test_chromium_publishes_simulcast_after_receiving_and_receives_after_publishing(
    browser: Browser, room: str
) -> None:
    page = await browser.new_page("participants")
    await page.goto(browser.url())
    await page.evaluate(_PARTICIPANT_JS)
    failed: list[str] = []
    for index in range(ROUNDS):
        try:
            await one_round(page, f"{room}-{index}")
        except AssertionError as exc:
            failed.append(f"round {index}: {exc}")
            for name in ("a", "b"):
                await page.evaluate(f"() => window.participants.{name} && ({_CLOSE_JS})('{name}')")
    assert not failed, f"{len(failed)} of {ROUNDS} rounds failed; the first:\n{failed[0]}"
    browser.assert_no_page_errors()


@pytest.mark.parametrize(
    "first",
    [[{"source": "microphone"}], [{"source": "microphone"}, {"source": "camera"}]],
    ids=["microphone", "single-layer-camera"],
)
async def test_chromium_publishes_simulcast_after_publishing_without_it(
    browser: Browser, room: str, first: list[dict[str, Any]]
) -> None:
    page = await browser.new_page("participants")
    await page.goto(browser.url())
    await page.evaluate(_PARTICIPANT_JS)
    await page.evaluate("([room, name]) => window.startParticipant([room, name])", [room, "a"])
    await publish(page, "a", first)
    await publish(page, "a", [{"source": "screen", "simulcast": True}])
    browser.assert_no_page_errors()
