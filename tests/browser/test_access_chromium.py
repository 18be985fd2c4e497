"""The call page on a server with access keys (docs/protocol.md §5 ``join``), in real Chromium:
the page takes its token from ``?token=``, a page without one is told why it cannot join, and a
second page of the same identity replaces the first."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import expect

from signaling.tokens import create_token, new_secret
from tests.browser.conftest import CAPTURE, Browser
from tests.browser.pages import wait_flowing

pytestmark = pytest.mark.browser

KEYS = {"main": new_secret()}


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "keys"
    path.write_text("".join(f"{kid}: {secret}\n" for kid, secret in KEYS.items()))
    return {"SFU_KEYS_FILE": str(path)}


def token(room: str, identity: str) -> str:
    return create_token(KEYS, "main", room=room, identity=identity, name=identity, ttl=300)


async def test_pages_join_with_tokens_and_an_identity_is_one_participant(
    browser: Browser, room: str
) -> None:
    stranger = await browser.new_page("stranger")
    await stranger.goto(browser.url(room=room, name="stranger", autojoin="1", **CAPTURE))
    await expect(stranger.locator("#join-status")).to_contain_text("token-required")

    ann = await browser.join(room, "ann", token=token(room, "ann"))
    bob = await browser.join(room, "bob", token=token(room, "bob"))
    await wait_flowing(ann, "bob")
    await wait_flowing(bob, "ann")

    again = await browser.join(room, "ann", token=token(room, "ann"))  # ann's second device
    await ann.wait_for_function(
        "() => window.sfuApp.client === null"
        " || window.sfuApp.client.closeReason === 'duplicate-identity'"
    )
    await wait_flowing(bob, "ann")  # the new session's media
    await wait_flowing(again, "bob")
