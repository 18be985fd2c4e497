"""Two Chromium pages meet through a server started with ``--udp-port`` (scale-out plan §2, S3):
each sees and hears the other, and both connections run over the server's one UDP socket.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.browser.conftest import Browser
from tests.browser.pages import wait_flowing
from tests.e2e.test_single_port import udp_sockets

pytestmark = pytest.mark.browser

# the server's candidates in the page's remote description: "... udp PRIORITY HOST PORT typ host"
_CANDIDATE_PORTS_JS = """
() => [...window.sfuApp.client.pc.remoteDescription.sdp.matchAll(
  /a=candidate:\\S+ 1 udp \\d+ \\S+ (\\d+) typ host/g)].map((m) => Number(m[1]))
"""


@pytest.fixture
def server_env() -> dict[str, str]:
    return {"SFU_UDP_PORT": "0"}


async def test_two_pages_meet_on_one_udp_port(browser: Browser, room: str) -> None:
    alice = await browser.join(room, "alice")
    bob = await browser.join(room, "bob")
    await asyncio.gather(wait_flowing(alice, "bob"), wait_flowing(bob, "alice"))

    process = browser.server.process
    assert process is not None
    (address,) = udp_sockets(process.pid)  # the tests' one ICE host address
    assert address[0] == "127.0.0.1"
    for page in (alice, bob):
        assert set(await page.evaluate(_CANDIDATE_PORTS_JS)) == {address[1]}
    browser.assert_no_page_errors()
