"""The Chromium side of the simulcast switch benchmark: publisher and subscriber pages, probes.

Both SFUs get the same pages: a publisher sending its fake camera (1280x720) as three VP8
encodings, and a subscriber playing what it receives in a <video>. Against aiosfu the pages use
``sfu-client.js`` (loaded from the server, as the demo does); against Janus the harness signals
the pages' own RTCPeerConnections through Janus's WebSocket API (offers and answers travel
through ``page.evaluate``). Every page keeps ``window.__bench`` = {pc, sender | receiver, video}
so that the probes below are the same for both.

Probes, all in the page, timed with ``performance.now()``:

- the subscriber's <video>: ``requestVideoFrameCallback``, one row per presented frame (its
  width, presentation time, and for WebRTC the time its last packet was received);
- the subscriber's inbound-rtp every 10 ms (``receiver.getStats()``): a row whenever frameWidth,
  keyFramesDecoded or freezeCount changed;
- the publisher's outbound-rtp per rid every 10 ms: a row whenever pliCount, firCount or
  keyFramesEncoded changed.
"""

from __future__ import annotations

import time
from typing import Any

from playwright.async_api import Page

#: the encodings of a 1280x720 camera, smallest first: sfu-client.js's SIMULCAST_ENCODINGS
ENCODINGS: list[dict[str, Any]] = [
    {"rid": "q", "scaleResolutionDownBy": 4, "maxBitrate": 150_000},
    {"rid": "h", "scaleResolutionDownBy": 2, "maxBitrate": 500_000},
    {"rid": "f", "scaleResolutionDownBy": 1, "maxBitrate": 1_500_000},
]

_CAMERA_JS = """async ([width, height, fps]) => {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: false,
    video: {width: {exact: width}, height: {exact: height}, frameRate: {ideal: fps, max: fps}},
  });
  const track = stream.getVideoTracks()[0];
  track.contentHint = "detail";
  window.__bench = {track};
  return track.getSettings();
}"""

# a busy machine would make Chromium scale its capture down, and widths would no longer say
# which layer a frame came from
_KEEP_RESOLUTION_JS = """async () => {
  const sender = window.__bench.sender;
  const params = sender.getParameters();
  params.degradationPreference = "maintain-resolution";
  await sender.setParameters(params);
}"""

_GATHERED_JS = """async () => {
  const pc = window.__bench.pc;
  if (pc.iceGatheringState !== "complete") {
    await new Promise((resolve) => {
      const check = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", check);
      setTimeout(resolve, 5000);
    });
  }
  return pc.localDescription.sdp;
}"""

# --- Janus: the harness signals ---

_JANUS_OFFER_JS = """async (encodings) => {
  const pc = new RTCPeerConnection({iceServers: [], bundlePolicy: "max-bundle"});
  const transceiver = pc.addTransceiver(window.__bench.track, {
    direction: "sendonly", sendEncodings: encodings,
  });
  Object.assign(window.__bench, {pc, sender: transceiver.sender});
  await pc.setLocalDescription(await pc.createOffer());
}"""

_SET_ANSWER_JS = """async (sdp) => {
  await window.__bench.pc.setRemoteDescription({type: "answer", sdp});
}"""

_VIDEO_JS = """(track) => {
  const video = document.createElement("video");
  Object.assign(video, {autoplay: true, muted: true, playsInline: true, width: 640});
  video.srcObject = new MediaStream([track]);
  document.body.appendChild(video);
  return video;
}"""

_JANUS_ANSWER_JS = (
    """async (sdp) => {
  const pc = new RTCPeerConnection({iceServers: [], bundlePolicy: "max-bundle"});
  const makeVideo = """
    + _VIDEO_JS
    + """;
  window.__bench = {pc};
  pc.addEventListener("track", (e) => {
    if (e.track.kind !== "video") return;
    Object.assign(window.__bench, {receiver: e.receiver, video: makeVideo(e.track)});
  });
  await pc.setRemoteDescription({type: "offer", sdp});
  await pc.setLocalDescription(await pc.createAnswer());
}"""
)

# --- aiosfu: sfu-client.js signals ---

_AIOSFU_PUBLISH_JS = """async ([room, encodings]) => {
  const {SfuClient} = await import("/sfu-client.js");
  const client = new SfuClient(undefined, {adaptiveStream: false, log: console.warn});
  // all three layers encoded throughout, as for Janus: the server's publisherLayers would turn
  // off a layer nobody wanted for 10 s, and the switch cycle leaves one unwanted that long
  client._setLayers = () => {};
  await client.join(room, "pub");
  const options = {source: "camera", simulcast: encodings};
  const local = await client.publish(window.__bench.track, options);
  Object.assign(window.__bench, {client, pc: client.pc, sender: local.transceiver.sender});
}"""

_AIOSFU_SUBSCRIBE_JS = (
    """async (room) => {
  const {SfuClient} = await import("/sfu-client.js");
  const client = new SfuClient(undefined, {adaptiveStream: false, log: console.warn});
  const makeVideo = """
    + _VIDEO_JS
    + """;
  window.__bench = {client};
  const track = new Promise((resolve) => client.addEventListener("track", (e) => {
    if (e.detail.kind === "video") resolve(e.detail);
  }));
  await client.join(room, "sub");
  const remote = await track;
  Object.assign(window.__bench, {
    pc: client.pc, receiver: remote.receiver, video: makeVideo(remote.track),
    trackId: remote.trackId,
  });
  return remote.trackId;
}"""
)

_AIOSFU_REQUEST_JS = """(layer) => {
  const bench = window.__bench;
  const at = performance.now();
  bench.client.setTrackSettings([bench.trackId], {maxLayer: layer});
  return at;
}"""

# --- probes ---

_PUBLISHER_PROBE_JS = """() => {
  const sender = window.__bench.sender;
  const rows = (window.__pubRows = []);
  const last = {};
  const poll = async () => {
    const report = await sender.getStats();
    const t = performance.now();
    report.forEach((r) => {
      if (r.type !== "outbound-rtp" || !r.rid) return;
      const values = [r.pliCount ?? 0, r.firCount ?? 0, r.keyFramesEncoded ?? 0];
      const key = values.join();
      if (last[r.rid] !== key) {
        last[r.rid] = key;
        rows.push([t, r.rid, ...values, r.timestamp]);
      }
    });
    if (rows.length > 20000) rows.splice(0, 10000);
    setTimeout(poll, 10);
  };
  poll();
}"""

_SUBSCRIBER_PROBE_JS = """() => {
  const {video, receiver} = window.__bench;
  const frames = (window.__frames = []);
  const tick = (now, m) => {
    frames.push([now, m.width, m.presentationTime, m.receiveTime ?? -1, m.rtpTimestamp ?? -1]);
    if (frames.length > 20000) frames.splice(0, 10000);
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
  const stats = (window.__stats = []);
  let last = "";
  const poll = async () => {
    const report = await receiver.getStats();
    const t = performance.now();
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      const values = [s.frameWidth ?? 0, s.keyFramesDecoded ?? 0, s.freezeCount ?? 0];
      const key = values.join();
      if (key !== last) {
        last = key;
        stats.push([t, ...values, s.timestamp]);
      }
    });
    if (stats.length > 20000) stats.splice(0, 10000);
    setTimeout(poll, 10);
  };
  poll();
}"""

_SINCE_JS = "([name, at]) => window[name].filter((row) => row[0] >= at)"

_PUBLISHER_SNAPSHOT_JS = """async () => {
  const out = {};
  (await window.__bench.sender.getStats()).forEach((r) => {
    if (r.type !== "outbound-rtp" || !r.rid) return;
    out[r.rid] = {
      ssrc: r.ssrc, width: r.frameWidth ?? 0, pli: r.pliCount ?? 0, fir: r.firCount ?? 0,
      keyframes: r.keyFramesEncoded ?? 0, bytes: r.bytesSent ?? 0, frames: r.framesEncoded ?? 0,
      limitation: r.qualityLimitationReason ?? "", target: r.targetBitrate ?? 0,
    };
  });
  return out;
}"""

_SUBSCRIBER_SNAPSHOT_JS = """async () => {
  let out = {};
  (await window.__bench.receiver.getStats()).forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    out = {
      width: s.frameWidth ?? 0, frames: s.framesDecoded ?? 0, keyframes: s.keyFramesDecoded ?? 0,
      freezes: s.freezeCount ?? 0, freeze_s: s.totalFreezesDuration ?? 0,
      pauses: s.pauseCount ?? 0, pause_s: s.totalPausesDuration ?? 0,
      dropped: s.framesDropped ?? 0, plis: s.pliCount ?? 0, nacks: s.nackCount ?? 0,
      lost: s.packetsLost ?? 0, packets: s.packetsReceived ?? 0,
      jitter_buffer_s: s.jitterBufferDelay ?? 0, decode_s: s.totalDecodeTime ?? 0,
      jitter_buffer_frames: s.jitterBufferEmittedCount ?? 0, jitter_s: s.jitter ?? 0,
    };
  });
  return out;
}"""


# the publisher's bandwidth estimate (the pacer sends at a multiple of what it allows)
_AVAILABLE_BITRATE_JS = """async () => {
  let out = 0;
  (await window.__bench.pc.getStats()).forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && s.availableOutgoingBitrate) {
      out = s.availableOutgoingBitrate;
    }
  });
  return out;
}"""


# --- calls ---


async def available_bitrate(page: Page) -> float:
    bitrate: float = await page.evaluate(_AVAILABLE_BITRATE_JS)
    return bitrate


async def open_camera(page: Page, width: int, height: int, fps: int) -> dict[str, Any]:
    settings: dict[str, Any] = await page.evaluate(_CAMERA_JS, [width, height, fps])
    return settings


async def janus_offer(page: Page) -> str:
    """The publisher's offer (candidates gathered), encodings highest first: Janus takes the
    first rid for the highest layer."""
    await page.evaluate(_JANUS_OFFER_JS, list(reversed(ENCODINGS)))
    sdp: str = await page.evaluate(_GATHERED_JS)
    return sdp


async def set_answer(page: Page, sdp: str) -> None:
    await page.evaluate(_SET_ANSWER_JS, sdp)


async def janus_answer(page: Page, offer: str) -> str:
    await page.evaluate(_JANUS_ANSWER_JS, offer)
    sdp: str = await page.evaluate(_GATHERED_JS)
    return sdp


async def aiosfu_publish(page: Page, room: str) -> None:
    await page.evaluate(_AIOSFU_PUBLISH_JS, [room, ENCODINGS])


async def aiosfu_subscribe(page: Page, room: str) -> str:
    track_id: str = await page.evaluate(_AIOSFU_SUBSCRIBE_JS, room)
    return track_id


async def aiosfu_request(page: Page, layer: int) -> float:
    """Ask for ``layer``; the page's ``performance.now()`` just before it was sent."""
    at: float = await page.evaluate(_AIOSFU_REQUEST_JS, layer)
    return at


async def keep_resolution(page: Page) -> None:
    await page.evaluate(_KEEP_RESOLUTION_JS)


async def start_probes(publisher: Page, subscriber: Page) -> None:
    await publisher.evaluate(_PUBLISHER_PROBE_JS)
    await subscriber.evaluate(_SUBSCRIBER_PROBE_JS)


async def rows_since(page: Page, name: str, at: float) -> list[list[Any]]:
    """Rows of ``window[name]`` (__frames, __stats, __pubRows) at or after page time ``at``."""
    rows: list[list[Any]] = await page.evaluate(_SINCE_JS, [name, at])
    return rows


async def publisher_snapshot(page: Page) -> dict[str, dict[str, Any]]:
    snapshot: dict[str, dict[str, Any]] = await page.evaluate(_PUBLISHER_SNAPSHOT_JS)
    return snapshot


async def subscriber_snapshot(page: Page) -> dict[str, Any]:
    snapshot: dict[str, Any] = await page.evaluate(_SUBSCRIBER_SNAPSHOT_JS)
    return snapshot


async def page_clock_offset(page: Page, samples: int = 7) -> float:
    """Wall-clock ms (``time.time()``) minus the page's ``performance.now()``, from the round
    trip with the smallest delay (its error is at most half that delay)."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        before = time.time()
        page_ms: float = await page.evaluate("() => performance.now()")
        after = time.time()
        offset = (before + after) * 500 - page_ms
        if best is None or after - before < best[0]:
            best = (after - before, offset)
    assert best is not None
    return best[1]
