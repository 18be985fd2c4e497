"""A receive-only Chromium page that reaches only a real coturn and the signaling, not the
server's UDP ports, receives video through a relay with the credentials of ``joined``
(sfu-client.js uses ``joined.iceServers``); without TURN servers it does not connect.

The network is tests/e2e/turn/harness.py's: server, publisher and coturn in one namespace (media
on 127.0.0.1 only, coturn listening on 10.99.0.1), Chromium in the other (10.99.0.2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import CHROMIUM, PageLog
from tests.browser.shaped_chromium import chromium_in
from tests.e2e.shaped_link import SERVER_ADDRESS, LinkUnavailable
from tests.e2e.turn.harness import call, turn_testbed

pytestmark = pytest.mark.browser

SECRET = "browser-turn-secret-77a1"

_WATCH_JS = """async ([room, waitMs]) => {
  const { SfuClient } = await import("/sfu-client.js");
  const client = new SfuClient(undefined, { autoReconnect: false });
  let closed = null;
  client.addEventListener("closed", (e) => { closed = e.detail.reason; });
  const video = new Promise((resolve) =>
    client.addEventListener("track", (e) => { if (e.detail.kind === "video") resolve(); }));
  const connected = new Promise((resolve) =>
    client.addEventListener("connectionstatechange", (e) => {
      if (e.detail.state === "connected") resolve();
    }));
  const started = performance.now();
  await client.join(room, "watcher");
  const outcome = await Promise.race([
    Promise.all([video, connected]).then(() => "connected"),
    new Promise((resolve) => setTimeout(() => resolve("timeout"), waitMs)),
  ]);
  const ms = performance.now() - started;
  let selected = null;
  let framesDecoded = 0;
  if (client.pc) {
    for (let i = 0; i < 50 && outcome === "connected" && framesDecoded === 0; i++) {
      const stats = await client.pc.getStats();
      stats.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") framesDecoded = s.framesDecoded ?? 0;
      });
      if (framesDecoded === 0) await new Promise((r) => setTimeout(r, 100));
    }
    const stats = await client.pc.getStats();
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) {
        const pair = stats.get(s.selectedCandidatePairId);
        const local = pair && stats.get(pair.localCandidateId);
        selected = local ? local.candidateType : null;
      }
    });
  }
  const result = {
    outcome: closed ? `closed: ${closed}` : outcome, ms, selected, framesDecoded,
    iceServers: client.serverIceServers.length,
    configured: client.pc ? client.pc.getConfiguration().iceServers.length : null,
  };
  if (!client.closed) await client.leave();
  return result;
}"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser TURN tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason)


async def _watch(tmp_path: Path, room: str, wait_ms: int, *, turn: bool) -> dict[str, Any]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (run scripts/install-system-deps as root)")
    logs: list[PageLog] = []
    try:
        with turn_testbed(tmp_path, SECRET) as (link, turnserver):
            env = {"SFU_TURN_SECRET": SECRET} if turn else {}
            extra = ("--turn-url", turnserver.url) if turn else ()
            with call(link, tmp_path, room, env, *extra) as server:
                async with chromium_in(link.subscriber_ns, logs) as chromium:
                    context = await chromium.browser.new_context()
                    page = await context.new_page()
                    await page.goto(server.url(SERVER_ADDRESS) + "/")
                    result: dict[str, Any] = await page.evaluate(_WATCH_JS, [room, wait_ms])
                    await context.close()
    except LinkUnavailable as exc:
        _unavailable(str(exc))
    print(json.dumps(result))
    return result


async def test_a_page_that_reaches_only_turn_receives_video_through_a_relay(
    tmp_path: Path,
) -> None:
    result = await _watch(tmp_path, "relayed", 15000, turn=True)
    assert result["iceServers"] == 1 and result["configured"] == 1, result
    assert result["outcome"] == "connected", result
    assert result["selected"] == "relay", result
    assert result["framesDecoded"] > 0, result


async def test_without_turn_servers_the_page_does_not_connect(tmp_path: Path) -> None:
    result = await _watch(tmp_path, "noturn", 8000, turn=False)
    assert result["iceServers"] == 0, result
    assert result["outcome"] != "connected" and result["framesDecoded"] == 0, result
