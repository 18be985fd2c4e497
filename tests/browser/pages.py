"""What the tests read from a call page: the grid, and the media its peer connection receives.

Media is judged from ``RTCPeerConnection.getStats()`` (frames decoded, audio packets and energy),
matched to participants through the page's own ``SfuClient`` (``window.sfuApp.client``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from playwright.async_api import Page

MEDIA_TIMEOUT = 25.0  # generous: two cores run the server, Chromium's pages and their codecs
MIN_FRAMES = 5  # decoded in one window (the pages capture 15 frames/s)
MIN_AUDIO_PACKETS = 20  # received in one window (Opus sends 50 packets/s)

# what this page receives from the participant called `name`, one entry per remote track
_RECEIVED_JS = """
async (name) => {
  const client = window.sfuApp && window.sfuApp.client;
  if (!client || !client.pc) return [];
  const participant = [...client.participants.values()].find((p) => p.name === name);
  if (!participant) return [];
  const report = await client.pc.getStats();
  const inbound = new Map();
  report.forEach((s) => { if (s.type === "inbound-rtp") inbound.set(s.mid, s); });
  return [...client.remoteTracks.values()]
    .filter((r) => r.participantId === participant.participantId)
    .map((r) => {
      const s = inbound.get(r.mid) || {};
      return {
        trackId: r.trackId, kind: r.kind, source: r.source, muted: r.muted, mid: r.mid,
        framesDecoded: s.framesDecoded || 0, packets: s.packetsReceived || 0,
        audioEnergy: s.totalAudioEnergy || 0, frameWidth: s.frameWidth || 0,
      };
    });
}
"""

# what this page sends, per source of its own tracks
_SENT_JS = """
async () => {
  const client = window.sfuApp.client;
  const report = await client.pc.getStats();
  const out = {};
  for (const local of client.localTracks) {
    report.forEach((s) => {
      if (s.type === "outbound-rtp" && s.mid === local.transceiver.mid) {
        out[local.source] = { packets: s.packetsSent || 0, bytes: s.bytesSent || 0 };
      }
    });
  }
  return out;
}
"""

# mean colour of the middle of the video in a participant's camera tile (null until it plays)
_TILE_COLOR_JS = """
(name) => {
  const video = document.querySelector(`.tile[data-name="${name}"][data-source="camera"] video`);
  if (!video || !video.videoWidth) return null;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const g = canvas.getContext("2d");
  g.drawImage(video, 0, 0);
  const [w, h] = [canvas.width, canvas.height];
  const data = g.getImageData(w / 4, h / 4, w / 2, h / 2).data;
  const sum = [0, 0, 0];
  for (let i = 0; i < data.length; i += 4) {
    sum[0] += data[i]; sum[1] += data[i + 1]; sum[2] += data[i + 2];
  }
  const n = data.length / 4;
  return sum.map((v) => Math.round(v / n));
}
"""


@dataclass(frozen=True, slots=True)
class Received:
    track_id: str
    kind: str
    source: str
    muted: bool
    mid: str
    frames_decoded: int
    packets: int
    audio_energy: float
    frame_width: int


async def received(page: Page, name: str) -> dict[str, Received]:
    """The remote tracks of participant ``name`` that ``page`` receives now, by source."""
    rows: list[dict[str, Any]] = await page.evaluate(_RECEIVED_JS, name)
    tracks = [
        Received(
            track_id=row["trackId"],
            kind=row["kind"],
            source=row["source"],
            muted=row["muted"],
            mid=row["mid"],
            frames_decoded=int(row["framesDecoded"]),
            packets=int(row["packets"]),
            audio_energy=float(row["audioEnergy"]),
            frame_width=int(row["frameWidth"]),
        )
        for row in rows
    ]
    return {t.source: t for t in tracks}


async def sent(page: Page) -> dict[str, tuple[int, int]]:
    """(packets, bytes) sent so far for each of the page's own tracks, by source."""
    rows: dict[str, dict[str, int]] = await page.evaluate(_SENT_JS)
    return {source: (row["packets"], row["bytes"]) for source, row in rows.items()}


async def tile_color(page: Page, name: str) -> tuple[int, int, int] | None:
    color: list[int] | None = await page.evaluate(_TILE_COLOR_JS, name)
    return (color[0], color[1], color[2]) if color else None


async def grid_names(page: Page) -> list[str]:
    """The names on the camera tiles of the grid, the page's own first."""
    names: list[str] = await page.eval_on_selector_all(
        '#grid .tile[data-source="camera"]', "tiles => tiles.map((t) => t.dataset.name)"
    )
    return names


def _counts(track: Received) -> tuple[int, int]:
    return track.packets, track.frames_decoded


def _flowing(before: Received | None, after: Received | None) -> bool:
    if before is None or after is None or before.track_id != after.track_id:
        return False
    if after.kind == "video":
        return after.frames_decoded - before.frames_decoded >= MIN_FRAMES
    return (
        after.packets - before.packets >= MIN_AUDIO_PACKETS
        and after.audio_energy > before.audio_energy
    )


async def wait_flowing(
    page: Page,
    name: str,
    sources: tuple[str, ...] = ("camera", "microphone"),
    *,
    window: float = 1.5,
    timeout: float = MEDIA_TIMEOUT,  # noqa: ASYNC109
) -> dict[str, Received]:
    """Wait until every track of ``sources`` from ``name`` keeps arriving at ``page``: video
    frames decoded and audio packets (with sound energy) rising over one ``window``."""
    deadline = time.monotonic() + timeout
    before = await received(page, name)
    while True:
        await asyncio.sleep(window)
        after = await received(page, name)
        stuck = [s for s in sources if not _flowing(before.get(s), after.get(s))]
        if not stuck:
            return after
        if time.monotonic() > deadline:
            raise AssertionError(
                f"media from {name} not flowing at this page for {stuck}: "
                f"before {before}, after {after}"
            )
        before = after


async def wait_stalled(
    page: Page,
    name: str,
    source: str,
    *,
    window: float = 1.5,
    timeout: float = MEDIA_TIMEOUT,  # noqa: ASYNC109
) -> None:
    """Wait until nothing more of ``name``'s ``source`` track arrives at ``page``."""
    deadline = time.monotonic() + timeout
    before = await received(page, name)
    while True:
        await asyncio.sleep(window)
        after = await received(page, name)
        b, a = before.get(source), after.get(source)
        if a is not None and b is not None and _counts(a) == _counts(b):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}'s {source} still arrives: before {b}, after {a}")
        before = after
