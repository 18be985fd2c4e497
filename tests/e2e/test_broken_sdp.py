"""Broken SDP and candidates sent to the real server: each gets a clear error and harms no one.

Bob sends what an outside client sent (issue 8, items 5 and 6) over a raw WebSocket, in a room
with Ann; then he publishes for real from an aiortc peer. Ann must see nothing of the broken
offers (no track, no renegotiation) and Bob's connection must stay usable. Then Ann answers the
server's offer of Bob's tracks with broken answers first: they change nothing either, and her
valid answer that follows is applied.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sfu.media.aiortc_bridge import set_ice_host_addresses

from .conftest import SfuServer

pytestmark = pytest.mark.e2e

TIMEOUT = 10.0
Json = dict[str, Any]
Edit = Callable[[str], str]


def sub(pattern: str, replacement: str) -> Edit:
    def edit(sdp: str) -> str:
        changed = re.sub(pattern, replacement, sdp, flags=re.MULTILINE)
        assert changed != sdp, pattern
        return changed

    return edit


BROKEN_OFFERS: list[tuple[str, Edit, str]] = [
    ("no-fingerprint", sub(r"^a=fingerprint:.*\r\n", ""), "no a=fingerprint"),
    ("huge-port", sub(r"^m=video \d+ ", "m=video 99999999999 "), "port 99999999999 is out"),
    ("transport-foo-bar", sub("UDP/TLS/RTP/SAVPF", "FOO/BAR"), "transport 'FOO/BAR'"),
    ("no-bundle", sub(r"^a=group:BUNDLE.*\r\n", ""), "not in a=group:BUNDLE"),
    ("setup-holdconn", sub(r"^a=setup:.*$", "a=setup:holdconn\r"), "a=setup:holdconn"),
    ("duplicate-mid", sub("^a=mid:1", "a=mid:0"), "mid '0' is also used"),
    ("media-text", sub("^m=video", "m=text"), "media type 'text'"),
    ("extmap-attribute", sub(r"(sdes:mid)\r$", r"\1 x\r"), "extension attributes"),
    ("candidate-garbage", sub(r"^a=candidate:.*$", "a=candidate:garbage\r"), "has 1 field"),
]
BROKEN_CANDIDATES: list[tuple[str, Json, str]] = [
    ("garbage", {"candidate": "garbage", "sdpMid": "0"}, "has 1 field"),
    ("too-short", {"candidate": "candidate:1 1 udp", "sdpMid": "0"}, "has 3 fields"),
    ("port", {"candidate": "candidate:1 1 udp 1 127.0.0.1 70000 typ host", "sdpMid": "0"}, "70000"),
    (
        "unknown-mid",
        {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "7"},
        "sdpMid '7' names no m-line",
    ),
]
BROKEN_ANSWERS: list[tuple[str, Edit, str]] = [
    ("answer-no-fingerprint", sub(r"^a=fingerprint:.*\r\n", ""), "no a=fingerprint"),
    ("answer-actpass", sub(r"^a=setup:.*$", "a=setup:actpass\r"), "must be active or passive"),
    ("answer-huge-ssrc", sub(r"^a=ssrc:\d+ ", "a=ssrc:99999999999 "), "SSRC 99999999999"),
]
PYTHON_REPRS = ("Error(", "NoneType", "Traceback", "object has no attribute")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    set_ice_host_addresses(["127.0.0.1"])
    try:
        async with aiohttp.ClientSession() as session:
            yield session
    finally:
        set_ice_host_addresses([])


async def receive(ws: aiohttp.ClientWebSocketResponse) -> Json:
    message = await ws.receive_json(timeout=TIMEOUT)
    assert isinstance(message, dict)
    return message


async def join(http: aiohttp.ClientSession, url: str, room: str, name: str) -> Any:
    ws = await http.ws_connect(url)
    await ws.send_json({"type": "join", "v": 1, "room": room, "name": name})
    assert (await receive(ws))["type"] == "joined"
    return ws


async def reply_to(ws: aiohttp.ClientWebSocketResponse, message: Json, request_id: str) -> Json:
    """The reply carrying ``request_id``; a server offer that comes first is skipped."""
    await ws.send_json({**message, "requestId": request_id})
    while True:
        reply = await receive(ws)
        if reply.get("requestId") == request_id:
            return reply
        assert reply["type"] == "offer", reply


async def expect_no_reply(ws: aiohttp.ClientWebSocketResponse, message: Json) -> None:
    """``message`` draws no error: the next reply is the one to a probe sent after it."""
    await ws.send_json(message)
    probe = await reply_to(ws, {"type": "mute", "trackId": "none", "muted": True}, "probe")
    assert probe["code"] == "unknown-track", probe


async def wait_connected(pc: RTCPeerConnection) -> None:
    for _ in range(int(TIMEOUT / 0.05)):
        if pc.connectionState == "connected":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"connection state {pc.connectionState}")


def assert_clear_error(reply: Json, code: str, expected: str) -> None:
    assert reply["type"] == "error", reply
    assert reply["code"] == code, reply
    assert expected in reply["message"], reply
    assert not any(python in reply["message"] for python in PYTHON_REPRS), reply


async def test_broken_offers_and_candidates_change_nothing(
    sfu_server: SfuServer, room: str, http: aiohttp.ClientSession
) -> None:
    ann = await join(http, sfu_server.ws_url, room, "Ann")
    bob = await join(http, sfu_server.ws_url, room, "Bob")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    ann_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendonly")
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        good = pc.localDescription.sdp

        for name, edit, expected in BROKEN_OFFERS:
            reply = await reply_to(bob, {"type": "offer", "sdp": edit(good)}, name)
            assert_clear_error(reply, "invalid-sdp", expected)
        # nothing of Bob's is in effect yet, so no candidate can be placed
        reply = await reply_to(bob, {"type": "candidate", **BROKEN_CANDIDATES[3][1]}, "early")
        assert_clear_error(reply, "invalid-sdp", "none of your offers or answers is in effect")

        # the connection is still usable: a valid offer is answered and connects
        answer = await reply_to(bob, {"type": "offer", "sdp": good}, "good")
        assert answer["type"] == "answer", answer
        published = {t["trackId"] for t in answer["tracks"]}
        assert len(published) == 2
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

        # Ann heard of Bob, then of his two real tracks: no phantom track, no offer before them
        seen = [await receive(ann) for _ in range(3)]
        assert [m["type"] for m in seen] == [
            "participant-joined",
            "track-published",
            "track-published",
        ], seen
        assert {m["track"]["trackId"] for m in seen[1:]} == published

        for name, fields, expected in BROKEN_CANDIDATES:
            reply = await reply_to(bob, {"type": "candidate", **fields}, name)
            assert_clear_error(reply, "invalid-sdp", expected)
        # dropped without an error (the server is UDP-only), and a candidate of m-line 1
        tcp = "candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active"
        await expect_no_reply(bob, {"type": "candidate", "candidate": tcp, "sdpMid": "0"})
        own = next(line for line in good.split("\r\n") if line.startswith("a=candidate:"))
        await expect_no_reply(bob, {"type": "candidate", "candidate": own[2:], "sdpMid": "1"})

        await wait_connected(pc)

        # Ann's answers to the server's offer of Bob's tracks: broken ones change nothing
        offer = await receive(ann)
        assert offer["type"] == "offer", offer
        await ann_pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await ann_pc.setLocalDescription(await ann_pc.createAnswer())
        valid = ann_pc.localDescription.sdp
        for name, edit, expected in BROKEN_ANSWERS:
            reply = await reply_to(ann, {"type": "answer", "sdp": edit(valid)}, name)
            assert_clear_error(reply, "invalid-sdp", expected)
        await expect_no_reply(ann, {"type": "answer", "sdp": valid})
        await wait_connected(ann_pc)
    finally:
        await pc.close()
        await ann_pc.close()
        await ann.close()
        await bob.close()
    logs = sfu_server.logs()
    assert '"level": "error"' not in logs and "Traceback" not in logs, logs
