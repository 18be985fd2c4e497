"""The call page (signaling/static/) in real headless Chromium, through the real server.

Each page captures Chromium's fake camera (a moving test pattern) and microphone (beeps) at
320x180, 15 frames/s. Media is checked with getStats() at the receiving page (pages.py).
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from playwright.async_api import Locator, Page, expect

from sfu_client import PALETTE, TONES, MarkerVideoTrack, ToneAudioTrack, closest_color, collect
from tests.browser.conftest import ARTIFACTS, CAPTURE, Browser, wait_joined
from tests.browser.pages import grid_names, received, sent, tile_color, wait_flowing, wait_stalled
from tests.e2e.conftest import ClientFactory

pytestmark = pytest.mark.browser

TILE_TIMEOUT_MS = 15_000


def tile(page: Page, name: str, source: str = "camera") -> Locator:
    return page.locator(f'#grid .tile[data-name="{name}"][data-source="{source}"]')


async def expect_grid(page: Page, names: list[str]) -> None:
    """The page shows exactly these camera tiles: its own first, then the others (any order)."""
    tiles = page.locator('#grid .tile[data-source="camera"]')
    await expect(tiles).to_have_count(len(names), timeout=TILE_TIMEOUT_MS)
    shown = await grid_names(page)
    assert (shown[0], sorted(shown[1:])) == (names[0], sorted(names[1:])), shown


async def test_two_pages_see_and_hear_each_other(browser: Browser, room: str) -> None:
    # alice goes through the form, as a person would
    alice = await browser.new_page("alice")
    await alice.goto(browser.url(**CAPTURE))
    await alice.fill("#room", room)
    await alice.fill("#name", "alice")
    await alice.click("#join")
    await wait_joined(alice)
    bob = await browser.join(room, "bob")

    await asyncio.gather(wait_flowing(alice, "bob"), wait_flowing(bob, "alice"))

    await expect_grid(alice, ["alice", "bob"])
    await expect_grid(bob, ["bob", "alice"])
    for page, other in ((alice, "bob"), (bob, "alice")):
        video = page.locator(f'.tile[data-name="{other}"][data-source="camera"] video')
        await expect(video).to_have_js_property("paused", False)
        assert await video.evaluate("v => v.videoWidth") == 320
        # the tile shows the connection quality from getStats()
        quality = page.locator(f'.tile[data-name="{other}"] .quality')
        await expect(quality).to_contain_text("RTT", timeout=TILE_TIMEOUT_MS)
        await expect(quality).to_contain_text("loss")
        # its own tile: the server's view of its downlink (connectionQuality), word and estimate
        own = page.locator('#grid .tile[data-self="true"]')
        word = re.compile("^(excellent|good|poor)$")
        await expect(own).to_have_attribute("data-quality", word, timeout=TILE_TIMEOUT_MS)
        await expect(own.locator(".quality")).to_contain_text(re.compile(r"\w+ ↓[\d.]+ [kM]bit/s"))

    # bob's page closes its client (leave, then the socket): it cleans up and says so, and
    # alice's grid drops him at once (a socket that merely drops is resumed: test_resume_chromium)
    await bob.evaluate("() => window.sfuApp.client.close('network gone')")
    await expect(bob.locator("#join-status")).to_contain_text("Disconnected")
    await expect(bob.locator("#join-form")).to_be_visible()
    assert await bob.evaluate("() => window.sfuApp.client") is None
    await expect_grid(alice, ["alice"])
    browser.assert_no_page_errors()


async def test_late_joiner_sees_everyone_and_grids_follow_leaves(
    browser: Browser, room: str
) -> None:
    # alice and bob join at the same moment: their offers cross the server's (glare)
    alice, bob = await asyncio.gather(browser.join(room, "alice"), browser.join(room, "bob"))
    await asyncio.gather(wait_flowing(alice, "bob"), wait_flowing(bob, "alice"))

    carol = await browser.join(room, "carol")
    await asyncio.gather(
        wait_flowing(carol, "alice"),
        wait_flowing(carol, "bob"),
        wait_flowing(alice, "carol"),
        wait_flowing(bob, "carol"),
    )
    await expect_grid(carol, ["carol", "alice", "bob"])
    await expect_grid(alice, ["alice", "bob", "carol"])
    for name in ("alice", "bob"):
        await expect(tile(carol, name).locator(".quality")).to_contain_text("RTT")
    ARTIFACTS.mkdir(exist_ok=True)
    await carol.screenshot(path=ARTIFACTS / "three-party-call.png")

    # every page shows the same fake camera, so check the mapping another way: when alice's
    # camera goes off, only what carol shows in alice's tile stops
    await alice.click("#camera")
    await expect(tile(carol, "alice")).to_have_attribute("data-camera", "off")
    await asyncio.gather(
        wait_stalled(carol, "alice", "camera"), wait_flowing(carol, "bob", ("camera",))
    )
    await alice.click("#camera")
    await wait_flowing(carol, "alice", ("camera",))

    freed_mids = {
        t.mid for name in ("bob", "carol") for t in (await received(alice, name)).values()
    }

    # bob leaves with the button: his page is back at the form, the others' grids drop him
    await bob.click("#leave")
    await expect(bob.locator("#join-form")).to_be_visible()
    await expect_grid(alice, ["alice", "carol"])
    await expect_grid(carol, ["carol", "alice"])
    assert await bob.locator("#grid .tile").count() == 0

    # carol closes her tab: alice sees her go at once (no timeout involved)
    closed_at = time.monotonic()
    await carol.context.close()
    await expect_grid(alice, ["alice"])
    assert time.monotonic() - closed_at < 5.0
    assert await received(alice, "carol") == {}

    # dave's tracks arrive on the m-lines bob's and carol's tracks left behind
    dave = await browser.join(room, "dave")
    media = await wait_flowing(alice, "dave")
    await wait_flowing(dave, "alice")
    await expect_grid(alice, ["alice", "dave"])
    assert {t.mid for t in media.values()} <= freed_mids, (media, freed_mids)
    browser.assert_no_page_errors()


async def test_browser_and_python_client_exchange_media(
    browser: Browser, make_client: ClientFactory, room: str
) -> None:
    alice = await browser.join(room, "alice")
    python = await make_client(room, "python")
    await python.publish_many(
        [
            (MarkerVideoTrack(PALETTE[0], 320, 180, 15), "camera"),
            (ToneAudioTrack(TONES[0]), "microphone"),
        ]
    )

    # the page decodes the Python client's marker colour in the right tile, and hears its tone
    await wait_flowing(alice, "python")
    await expect(tile(alice, "python")).to_have_attribute("data-video", "true")
    deadline = time.monotonic() + 10
    color = await tile_color(alice, "python")
    while (color is None or closest_color(color) != 0) and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        color = await tile_color(alice, "python")
    assert color is not None and closest_color(color) == 0, f"tile colour {color}"

    # the Python client decodes the page's camera and microphone
    participant = await python.wait_for_participant("alice", 10)
    video = await python.wait_for_track(participant.participant_id, "video", 20)
    audio = await python.wait_for_track(participant.participant_id, "audio", 20)
    frames, sound = await asyncio.gather(
        collect(video.track, count=15, timeout=20), collect(audio.track, duration=1.5, timeout=20)
    )
    assert len(frames.records) >= 15
    assert len(sound.records) >= 25  # 20 ms frames
    assert video.source == "camera" and audio.source == "microphone"
    assert not python.errors
    browser.assert_no_page_errors()


async def test_mute_and_camera_off_reach_the_other_page(browser: Browser, room: str) -> None:
    alice, bob = await browser.join(room, "alice"), await browser.join(room, "bob")
    await wait_flowing(bob, "alice")
    alice_at_bob = tile(bob, "alice")
    await expect(alice_at_bob).to_have_attribute("data-mic", "on")

    # mute: bob's tile shows it, and alice stops sending audio altogether
    await alice.click("#mic")
    await expect(alice_at_bob).to_have_attribute("data-mic", "muted", timeout=TILE_TIMEOUT_MS)
    await expect(alice_at_bob.locator('.icons [title="mic muted"]')).to_be_visible()
    await expect(alice.locator("#mic")).to_have_text("Unmute mic")
    await wait_stalled(bob, "alice", "microphone")
    before = await sent(alice)
    await asyncio.sleep(1.5)
    assert (await sent(alice))["microphone"] == before["microphone"], "a muted mic sends"

    # camera off: the same for video, and the tile shows the camera-off state
    await alice.click("#camera")
    await expect(alice_at_bob).to_have_attribute("data-camera", "off", timeout=TILE_TIMEOUT_MS)
    await expect(alice_at_bob.locator(".avatar")).to_be_visible()
    await wait_stalled(bob, "alice", "camera")
    before = await sent(alice)
    await asyncio.sleep(1.5)
    assert (await sent(alice))["camera"] == before["camera"], "a camera that is off sends"

    # both back on: same tracks, media flows again
    track_ids = {s: r.track_id for s, r in (await received(bob, "alice")).items()}
    await alice.click("#camera")
    await alice.click("#mic")
    await expect(alice_at_bob).to_have_attribute("data-camera", "on", timeout=TILE_TIMEOUT_MS)
    await expect(alice_at_bob).to_have_attribute("data-mic", "on")
    after = await wait_flowing(bob, "alice")
    assert {s: r.track_id for s, r in after.items()} == track_ids
    browser.assert_no_page_errors()


async def test_screen_share_arrives_as_a_separate_track(browser: Browser, room: str) -> None:
    alice, bob = await browser.join(room, "alice"), await browser.join(room, "bob")
    await wait_flowing(bob, "alice")

    # real getDisplayMedia: headless Chromium with --use-fake-ui-for-media-stream picks the
    # (virtual) screen without a prompt; a click gives the page the user activation it needs
    for _ in range(2):  # the second share reuses the first one's m-line, with a new track id
        await alice.click("#screen")
        await expect(alice.locator("#screen")).to_have_text("Stop sharing", timeout=TILE_TIMEOUT_MS)
        shared = tile(bob, "alice", "screen")
        await expect(shared).to_have_count(1, timeout=TILE_TIMEOUT_MS)
        media = await wait_flowing(bob, "alice", ("camera", "microphone", "screen"))
        assert media["screen"].kind == "video"
        assert media["screen"].track_id != media["camera"].track_id
        assert media["screen"].mid != media["camera"].mid
        await expect(shared).to_have_attribute("data-track-id", media["screen"].track_id)
        assert media["screen"].frame_width > media["camera"].frame_width  # a screen, not 320x180

        await alice.click("#screen")
        await expect(shared).to_have_count(0, timeout=TILE_TIMEOUT_MS)
        await expect(alice.locator("#screen")).to_have_text("Share screen")
        assert "screen" not in await received(bob, "alice")
    await wait_flowing(bob, "alice")  # the camera was never disturbed
    browser.assert_no_page_errors()
