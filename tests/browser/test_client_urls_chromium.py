"""sfu-client.js given several servers (``urls``: the nodes of one cluster), in real headless
Chromium: a node that cannot be reached, or that refuses the join as ``server-draining`` (it was
sent SIGTERM with ``--drain-timeout``), is skipped at join."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from sfu_client import SfuClient
from tests.browser.conftest import Browser
from tests.e2e.conftest import _start_server, _stop_server

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
