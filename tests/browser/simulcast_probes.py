"""What the simulcast browser tests (Chromium, Firefox) read from and do to the demo page.

The demo page's simulcast camera at 1280x720 makes three layers 320, 640 and 1280 wide; a
subscriber's shown frames are timed with ``requestVideoFrameCallback`` (both browsers have it).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

#: layer index (smallest first) -> frame width of the demo's three encodings at 1280x720
WIDTHS = {0: 320, 1: 640, 2: 1280}
LAYERS_TIMEOUT = 20.0  # generous: two browsers encode and decode 720p on a shared 2-core machine


class Evaluates(Protocol):
    """A playwright page or a FirefoxPage."""

    async def evaluate(self, expression: str, arg: Any = None) -> Any: ...


#: times and widths of the frames shown in `name`'s camera tile, kept in window.__frames
RECORD_FRAMES_JS = """(name) => {
  const video = document.querySelector(
    `#grid .tile[data-name="${name}"][data-source="camera"] video`);
  if (!video || !video.requestVideoFrameCallback) return false;
  window.__frames = [];
  const tick = (now, meta) => {
    window.__frames.push([now, meta.width]);
    if (window.__frames.length > 4000) window.__frames.splice(0, 2000);
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
  return true;
}"""

#: the publisher's layers: rid -> frame width it encodes now
SENT_WIDTHS_JS = """async () => {
  const widths = {};
  for (const s of window.sfuApp.client.pc.getSenders()) {
    if (!s.track || s.track.kind !== "video") continue;
    (await s.getStats()).forEach((r) => {
      if (r.type === "outbound-rtp" && r.rid) widths[r.rid] = r.frameWidth ?? 0;
    });
  }
  return widths;
}"""

# The publisher keeps its layers' sizes: on a busy machine both browsers would scale their
# capture down (Firefox then sends its top layer at 960x540), and a width would no longer tell
# which layer a frame came from.
_KEEP_RESOLUTION_JS = """async () => {
  for (const s of window.sfuApp.client.pc.getSenders()) {
    if (!s.track || s.track.kind !== "video") continue;
    s.track.contentHint = "detail";
    const params = s.getParameters();
    params.degradationPreference = "maintain-resolution";
    await s.setParameters(params);
  }
}"""


async def wait_for_layers(publisher: Evaluates) -> dict[str, int]:
    """The publisher sends three layers of distinct widths (its bandwidth estimate ramps up);
    rid -> width."""
    await publisher.evaluate(_KEEP_RESOLUTION_JS)
    deadline = time.monotonic() + LAYERS_TIMEOUT
    while True:
        widths: dict[str, int] = await publisher.evaluate(SENT_WIDTHS_JS)
        if sorted(widths.values()) == sorted(WIDTHS.values()):
            return widths
        assert time.monotonic() < deadline, f"the publisher's layers never all came: {widths}"
        await asyncio.sleep(0.5)
