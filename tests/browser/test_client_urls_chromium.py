"""sfu-client.js given several servers (``urls``: the nodes of one cluster), in real headless
Chromium: a node that cannot be reached, or that refuses the join as ``server-draining`` (it was
sent SIGTERM with ``--drain-timeout``), is skipped at join; a session whose node is killed stops
resuming there and joins again through the next URL; but when no URL can be reached (the page's
own network is away) it keeps resuming, and resumes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from sfu_client import SfuClient
from tests.browser.conftest import Browser
from tests.e2e.conftest import _start_server, _stop_server
from tests.e2e.outage import CuttableProxy

pytestmark = pytest.mark.browser

_JOIN_JS = """
async ([urls, room]) => {
  const { SfuClient } = await import("/sfu-client.js");
  const client = new SfuClient(urls[0], { urls });
  const joined = await client.join(room, "urls");
  const result = { url: client.url, urls: client.urls, id: joined.participantId };
  client.leave();
  return result;
}
"""


async def test_a_node_that_cannot_be_reached_is_skipped_at_join(
    browser: Browser, room: str
) -> None:
    with socket.socket() as unused:  # a port nothing listens on: a node that is gone
        unused.bind(("127.0.0.1", 0))
        gone = f"ws://127.0.0.1:{unused.getsockname()[1]}/ws"
    live = browser.server.ws_url
    page = await browser.new_page("urls")
    await page.goto(browser.url())
    result = await page.evaluate(_JOIN_JS, [[gone, live], room])
    assert result["url"] == live and result["urls"] == [live, gone]
    assert str(result["id"]).startswith("PA_")


async def test_a_draining_node_is_skipped_at_join(
    browser: Browser, room: str, tmp_path: Path
) -> None:
    workdir = tmp_path / "draining"
    workdir.mkdir()
    draining = _start_server(workdir, extra=("--drain-timeout", "60"))
    assert draining.process is not None
    # a session there keeps it draining (with none left it would stop at once)
    keeper = await SfuClient.connect(draining.ws_url, "kept", "keeper")
    try:
        draining.process.send_signal(signal.SIGTERM)
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 10
            while True:
                async with http.get(draining.url + "/healthz") as response:
                    if json.loads(await response.text())["status"] == "draining":
                        break
                assert time.monotonic() < deadline, "the server does not drain"
        live = browser.server.ws_url
        page = await browser.new_page("urls")
        await page.goto(browser.url())
        result = await page.evaluate(_JOIN_JS, [[draining.ws_url, live], room])
        assert result["url"] == live and result["urls"] == [live, draining.ws_url]
        assert str(result["id"]).startswith("PA_")
    finally:
        await keeper.leave()  # the last session: the draining server stops
        draining.exit_code = await asyncio.to_thread(draining.process.wait, 10)
        _stop_server(draining)


# join through urls[0], then report the first "reconnected" (and where the client is then)
_REJOIN_JS = """
async ([urls, room]) => {
  const { SfuClient } = await import("/sfu-client.js");
  const client = new SfuClient(urls[0], { urls });
  const reconnected = new Promise((resolve) =>
    client.addEventListener("reconnected", (e) => resolve(e.detail), { once: true }));
  const closed = new Promise((resolve) =>
    client.addEventListener("closed", (e) => resolve({ closed: e.detail }), { once: true }));
  const joined = await client.join(room, "urls");
  window.firstId = joined.participantId;
  window.outcome = Promise.race([reconnected, closed]).then((detail) => {
    const result = { ...detail, url: client.url, first: joined.participantId };
    client.leave();
    return result;
  });
  return joined.participantId;
}
"""


async def test_a_session_whose_node_died_joins_again_through_the_next_url(
    browser: Browser, room: str, tmp_path: Path
) -> None:
    workdir = tmp_path / "doomed"
    workdir.mkdir()
    doomed = _start_server(workdir)  # a second server: the node the session lives on
    try:
        first = doomed.url.replace("http", "ws", 1) + "/ws"
        live = browser.server.ws_url
        page = await browser.new_page("urls")
        await page.goto(browser.url())
        await page.evaluate(_REJOIN_JS, [[first, live], room])
        assert doomed.process is not None
        os.kill(doomed.process.pid, signal.SIGKILL)  # gone: its port refuses connections
        doomed.process.wait()
        # within the server's resume window (15 s): had it kept resuming, it would say "the
        # resume window is over"
        result = await page.evaluate("() => window.outcome")
    finally:
        if doomed.process is not None and doomed.process.poll() is None:
            doomed.process.kill()
            doomed.process.wait()
    assert result.get("how") == "rejoined", result
    assert result["reason"] == "the session's node cannot be reached"
    assert result["url"] == live
    assert result["participantId"] != result["first"]


async def test_with_every_url_unreachable_the_session_is_resumed(
    browser: Browser, room: str
) -> None:
    # two ways to the one server, both cut: to the page, its network is away
    server = browser.server.url.removeprefix("http://").split(":")
    proxies = [CuttableProxy(server[0], int(server[1])) for _ in range(2)]
    try:
        urls = [f"ws://127.0.0.1:{await proxy.start()}/ws" for proxy in proxies]
        page = await browser.new_page("urls")
        await page.goto(browser.url())
        await page.evaluate(_REJOIN_JS, [urls, room])
        for proxy in proxies:
            proxy.cut()
        await asyncio.sleep(2.0)  # several resume attempts, each refused by both
        for proxy in proxies:
            proxy.restore()
        result = await page.evaluate("() => window.outcome")
    finally:
        for proxy in proxies:
            await proxy.close()
    assert result.get("how") == "resumed", result
    assert result["participantId"] == result["first"]
    assert result["url"] == urls[0]
