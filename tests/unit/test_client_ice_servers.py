"""The Python client uses the ICE servers of ``joined`` (docs/protocol.md §5): for its peer
connection, after its own, and those of the new ``joined`` when it joins again by itself.

What aiortc hands aioice is read on the transport's connection, as
tests/unit/test_aiortc_bridge_client.py pins it."""

from __future__ import annotations

import json
from typing import Any

from sfu_client import SfuClient
from tests.unit.test_client_messages import NoSession, SilentWebSocket


def joined(participant_id: str, username: str) -> str:
    servers = [{"urls": ["turn:127.0.0.1:3478?transport=udp"], "username": username,
                "credential": "c-" + username}]  # fmt: skip
    message = {"type": "joined", "v": 1, "room": "r", "participantId": participant_id,
               "participants": [], "iceServers": servers}  # fmt: skip
    return json.dumps(message)


def ice_connection(client: SfuClient) -> Any:
    client.pc.addTransceiver("video", "recvonly")  # makes the (bundled) transport
    transport: Any = client.pc.getTransceivers()[0].receiver.transport
    return transport.transport.iceGatherer._connection


async def test_joined_servers_come_after_the_clients_own_and_a_rejoin_gets_the_new_ones() -> None:
    client = SfuClient(NoSession(), SilentWebSocket(), ice_servers=["stun:127.0.0.1:3479"])  # type: ignore[arg-type]
    try:
        client._on_text(joined("PA_1", "100:PA_1"))
        assert [s.username for s in client.server_ice_servers] == ["100:PA_1"]
        connection = ice_connection(client)
        assert connection.stun_server == ("127.0.0.1", 3479)  # the client's own, kept
        assert connection.turn_server == ("127.0.0.1", 3478)
        assert (connection.turn_username, connection.turn_password) == ("100:PA_1", "c-100:PA_1")

        first = client.pc
        client._adopt(SilentWebSocket(), joined("PA_2", "200:PA_2"))  # type: ignore[arg-type]
        assert client.pc is not first
        connection = ice_connection(client)
        assert (connection.turn_username, connection.turn_password) == ("200:PA_2", "c-200:PA_2")
        await first.close()
    finally:
        await client.close()


async def test_without_ice_servers_in_joined_only_the_clients_own_are_used() -> None:
    client = SfuClient(NoSession(), SilentWebSocket())  # type: ignore[arg-type]
    try:
        message = {"type": "joined", "v": 1, "room": "r", "participantId": "PA_1",
                   "participants": []}  # fmt: skip
        client._on_text(json.dumps(message))
        assert client.server_ice_servers == []
        connection = ice_connection(client)
        assert connection.turn_server is None and connection.stun_server is None
    finally:
        await client.close()
