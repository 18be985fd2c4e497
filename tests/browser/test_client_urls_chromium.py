"""sfu-client.js given several servers (``urls``: the nodes of one cluster), in real headless
Chromium: a node that cannot be reached is skipped at join."""

from __future__ import annotations

import socket

import pytest

from tests.browser.conftest import Browser

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
