"""Glare over a server offer that only stops a track (docs/protocol.md §8, "Glare"), with a
client written from the protocol: a raw WebSocket and an aiortc peer connection.

The client unsubscribes from a track; the server offers that m-line inactive, and before the
client answers, it offers itself (it publishes). The server is polite: it abandons its offer and
answers the client's. Its answer sets the m-line inactive already, but the client still holds
the abandoned offer's ``tracks`` map as the last word on what it receives: the server must offer
again (RFC 8829 §4.1.8's rollback leaves the change to be negotiated anew).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sfu_client import PALETTE, MarkerVideoTrack, ToneAudioTrack

from .conftest import ClientFactory, SfuServer

pytestmark = pytest.mark.e2e

TIMEOUT = 10.0


async def receive(ws: aiohttp.ClientWebSocketResponse, type_: str) -> dict[str, Any]:
    # one bound for the wait: the server's pings would restart a per-receive timeout
    async with asyncio.timeout(TIMEOUT):
        while True:
            message = await ws.receive_json()
            if message["type"] == type_:
                assert isinstance(message, dict)
                return message


async def test_an_abandoned_removal_is_offered_again(
    make_client: ClientFactory, sfu_server: SfuServer, room: str
) -> None:
    bob = await make_client(room, "bob")
    screen = await bob.publish(MarkerVideoTrack(PALETTE[2], 160, 120, 10), "screen")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    async with aiohttp.ClientSession() as http, http.ws_connect(sfu_server.ws_url) as ws:
        try:
            await ws.send_json({"type": "join", "v": 1, "room": room, "name": "raw"})
            await receive(ws, "joined")
            offer = await receive(ws, "offer")
            assert [t["trackId"] for t in offer["tracks"].values()] == [screen.track_id]
            await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await ws.send_json({"type": "answer", "sdp": pc.localDescription.sdp})

            await ws.send_json({"type": "unsubscribe", "trackIds": [screen.track_id]})
            removal = await receive(ws, "offer")  # not answered: ours crosses it
            assert removal["tracks"] == {}
            pc.addTrack(ToneAudioTrack(440.0))
            await pc.setLocalDescription(await pc.createOffer())
            mid = pc.getTransceivers()[-1].mid
            await ws.send_str(
                json.dumps(
                    {
                        "type": "offer",
                        "sdp": pc.localDescription.sdp,
                        "tracks": {mid: {"source": "microphone"}},
                        "requestId": "o1",
                    }
                )
            )
            answer = await receive(ws, "answer")
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            again = await receive(ws, "offer")  # times out without the server's new offer
            assert again["tracks"] == {}, "the screen is still in the server's tracks map"
            await pc.setRemoteDescription(RTCSessionDescription(again["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await ws.send_json({"type": "answer", "sdp": pc.localDescription.sdp})
        finally:
            await pc.close()
