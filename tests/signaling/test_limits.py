"""Limits that keep one client from holding or slowing the server (docs/operations.md, limits):
signaling message rate, sockets per address, rooms per server, pending negotiation time. Over
real WebSockets on 127.0.0.1, against the real room service."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCPeerConnection

from sfu.config import MediaConfig
from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu.service import Sfu
from sfu_client import ToneAudioTrack
from signaling.app import create_app

TIMEOUT = 5.0
Json = dict[str, Any]


async def receive(ws: aiohttp.ClientWebSocketResponse, type_: str | None = None) -> Json:
    async with asyncio.timeout(TIMEOUT):
        while True:
            msg = await ws.receive()
            assert msg.type is WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            assert isinstance(data, dict)
            if type_ is None or data["type"] == type_:
                return data


@pytest.fixture
async def service() -> AsyncIterator[Sfu]:
    set_ice_host_addresses(["127.0.0.1"])
    sfu = Sfu(MediaConfig(ice_hosts=("127.0.0.1",), max_rooms=2, negotiation_timeout=0.5))
    try:
        yield sfu
    finally:
        await sfu.close()
        set_ice_host_addresses([])


async def serve(service: Sfu, **options: Any) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(
        TestServer(create_app(service, resume_window=0, **options), host="127.0.0.1")
    )
    await client.start_server()
    return client


async def join(client: TestClient[Any, Any], room: str) -> tuple[Any, Json]:
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "join", "v": 1, "room": room, "name": "x"})
    return ws, await receive(ws)


async def test_a_flood_from_one_socket_is_handled_at_the_rate(service: Sfu) -> None:
    client = await serve(service, message_rate=(100.0, 20.0))
    try:
        flooder, _ = await join(client, "r")
        other, _ = await join(client, "r")
        started = time.monotonic()
        for n in range(600):  # 600 messages at once, each with a reply (an error)
            await flooder.send_str(json.dumps({"type": "mute", "trackId": f"T{n}", "muted": True}))
        # the other socket is answered at once meanwhile
        await other.send_json({"type": "mute", "trackId": "X", "muted": True, "requestId": "o"})
        reply = await receive(other, "error")
        assert reply["requestId"] == "o"
        answered = 0
        async with asyncio.timeout(TIMEOUT):
            while time.monotonic() - started < 1.0:
                await receive(flooder, "error")
                answered += 1
        # at most the burst and the rate's second's worth (plus slack for this loop's reading)
        assert 0 < answered <= 20 + 100 * 1.3, answered
        for ws in (flooder, other):
            await ws.close()
    finally:
        await client.close()


async def test_sockets_per_address_are_bounded(service: Sfu) -> None:
    client = await serve(service, max_sockets_per_address=2)
    try:
        first, second = await client.ws_connect("/ws"), await client.ws_connect("/ws")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ws")
        assert refused.value.status == 429
        await first.close()
        for _ in range(50):  # the server notices the close
            try:
                third = await client.ws_connect("/ws")
                break
            except aiohttp.WSServerHandshakeError:
                await asyncio.sleep(0.02)
        else:
            pytest.fail("a socket closed did not make room for another")
        for ws in (second, third):
            await ws.close()
    finally:
        await client.close()


async def test_rooms_per_server_are_bounded(service: Sfu) -> None:
    client = await serve(service)
    try:
        a, joined_a = await join(client, "a")
        b, joined_b = await join(client, "b")
        c, refused = await join(client, "c")
        assert joined_a["type"] == joined_b["type"] == "joined"
        assert (refused["type"], refused["code"]) == ("error", "too-many-rooms")
        a2, joined_a2 = await join(client, "a")  # an existing room still admits
        assert joined_a2["type"] == "joined"
        for ws in (a, b, c, a2):
            await ws.close()
    finally:
        await client.close()


async def test_an_offer_left_unanswered_ends_the_participant(service: Sfu) -> None:
    """A client that never answers the server's offer would hold its place and m-lines."""
    client = await serve(service)
    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        silent, _ = await join(client, "r")
        speaker, _ = await join(client, "r")
        publisher.addTrack(ToneAudioTrack(440.0))
        await publisher.setLocalDescription(await publisher.createOffer())
        await speaker.send_json({"type": "offer", "sdp": publisher.localDescription.sdp})
        await receive(speaker, "answer")
        offer = await receive(silent, "offer")  # the speaker's track: never answered
        assert offer["tracks"]
        bye = await receive(silent, "bye")
        assert bye["reason"] == "negotiation-timeout"
        left = await receive(speaker, "participant-left")
        assert left["reason"] == "negotiation-timeout"
        for ws in (silent, speaker):
            await ws.close()
    finally:
        await publisher.close()
        await client.close()
