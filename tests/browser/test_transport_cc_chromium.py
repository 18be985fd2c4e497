"""Chromium and the server exchange transport-cc both ways (issue 10).

As a subscriber, Chromium answers the server's transport-wide sequence number and sends its
feedback, which the server estimates from; as a publisher it offers transport-cc, the server
answers it and sends Chromium the feedback its own send-side estimator needs.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.browser.conftest import Browser
from tests.browser.pages import wait_flowing
from tests.e2e.conftest import SfuServer
from tests.e2e.observe import metric

pytestmark = pytest.mark.browser

TIMEOUT = 20.0


async def test_transport_cc_both_ways_with_chromium(
    browser: Browser, room: str, sfu_server: SfuServer
) -> None:
    alice = await browser.join(room, "alice")
    bob = await browser.join(room, "bob")
    await asyncio.gather(wait_flowing(alice, "bob"), wait_flowing(bob, "alice"))
    names = ("sfu_transport_feedback_received_total", "sfu_transport_feedback_sent_total")
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        received, sent = [await metric(sfu_server, name) for name in names]
        if (received > 0 and sent > 0) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert received > 0, "Chromium subscribers sent no transport-cc feedback"
    assert sent > 0, "the server sent the Chromium publishers no transport-cc feedback"
    browser.assert_no_page_errors()
