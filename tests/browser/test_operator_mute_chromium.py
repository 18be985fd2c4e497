"""The operator mutes a Chromium page's microphone (docs/operations.md, operator API; protocol
section 6 ``track-muted``): the page shows it muted and stops sending; the operator's unmute
leaves it muted (nobody's microphone comes on by itself) and the others are told so."""

from __future__ import annotations

import aiohttp
import pytest

from tests.browser.conftest import Browser
from tests.e2e.conftest import ClientFactory

pytestmark = pytest.mark.browser

_MIC = """() => { const mic = window.sfuApp.local.mic;
  return { muted: mic.muted, byOperator: mic.mutedByOperator, enabled: mic.track.enabled,
           button: document.getElementById("mic").textContent }; }"""


async def test_the_operators_mute_shows_on_the_page_and_its_unmute_leaves_it_muted(
    browser: Browser, make_client: ClientFactory, room: str
) -> None:
    page = await browser.join(room, "ann")
    mic_id = await page.evaluate("() => window.sfuApp.local.mic.trackId")
    ann_id = await page.evaluate("() => window.sfuApp.client.participantId")
    listener = await make_client(room, "listener")
    await listener.wait_until(
        lambda: ann_id in listener.participants and mic_id in listener.participants[ann_id].tracks,
        10.0,
        "ann's mic",
    )

    def shown_muted() -> bool:
        return listener.participants[ann_id].tracks[mic_id].muted

    url = f"{browser.server.url}/api/rooms/{room}/tracks/{mic_id}/mute"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"muted": True}) as response:
            assert response.status == 200, await response.text()
        await page.wait_for_function("() => window.sfuApp.local.mic.mutedByOperator === true")
        state = await page.evaluate(_MIC)
        assert state == {
            "muted": True,
            "byOperator": True,
            "enabled": False,
            "button": "Unmute mic",
        }
        await listener.wait_until(shown_muted, 5.0, "the mute told")

        since = len(listener.history)
        async with http.post(url, json={"muted": False}) as response:
            assert response.status == 200, await response.text()
        await page.wait_for_function("() => window.sfuApp.local.mic.mutedByOperator === false")
        assert (await page.evaluate(_MIC))["muted"] is True  # still muted: the user unmutes
        # the operator's unmute told the others "unmuted"; the page says it is muted after all
        await listener.wait_for(
            lambda m: m.type == "track-muted" and m.data["trackId"] == mic_id and m.data["muted"],
            5.0,
            since=since,
        )
        assert shown_muted()

        await page.click("#mic")  # the user unmutes
        await page.wait_for_function("() => window.sfuApp.local.mic.muted === false")
        await listener.wait_until(lambda: not shown_muted(), 5.0, "the user's unmute")
    browser.assert_no_page_errors()
