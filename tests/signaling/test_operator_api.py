"""The operator API (docs/operations.md, "Operator API") over real HTTP on 127.0.0.1, against
the real room service: who may call it, and what each call does to the participants."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from sfu.api import Grants, RoomService
from signaling.app import create_app
from signaling.tokens import create_token
from tests.signaling.test_app import sfu_service  # noqa: F401 - fixture, found by name

TIMEOUT = 5.0
KEYS = {"ops": "o" * 32}
ADMIN = Grants(admin=True)
Json = dict[str, Any]


def bearer(room: str = "*", grants: Grants = ADMIN, identity: str = "ops") -> dict[str, str]:
    token = create_token(KEYS, "ops", room=room, identity=identity, grants=grants)
    return {"Authorization": f"Bearer {token}"}


async def receive(ws: aiohttp.ClientWebSocketResponse) -> Json:
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.TEXT, msg
    data = json.loads(msg.data)
    assert isinstance(data, dict)
    return data


async def until(ws: aiohttp.ClientWebSocketResponse, type_: str) -> Json:
    while (message := await receive(ws))["type"] != type_:
        pass
    return message


@pytest.fixture
async def client(
    sfu_service: RoomService,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(sfu_service, keys=KEYS, resume_window=0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def join(client: TestClient[Any, Any], room: str, identity: str) -> tuple[Any, str]:
    ws = await client.ws_connect("/ws")
    token = create_token(KEYS, "ops", room=room, identity=identity, name=identity)
    await ws.send_json({"type": "join", "v": 1, "room": room, "name": "x", "token": token})
    joined = await receive(ws)
    assert joined["type"] == "joined", joined
    return ws, str(joined["participantId"])


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "token-required"),
        ({"Authorization": "Basic b3BzOm9wcw=="}, 401, "token-required"),
        ({"Authorization": "Bearer nonsense"}, 401, "token-invalid"),
        (bearer(grants=Grants()), 403, "not-allowed"),  # no admin grant
        (bearer(room="standup"), 403, "not-allowed"),  # one room's admin lists no rooms
    ],
)
async def test_only_admin_tokens_get_in(
    client: TestClient[Any, Any], headers: dict[str, str], status: int, code: str
) -> None:
    response = await client.get("/api/rooms", headers=headers)
    assert response.status == status
    assert (await response.json())["code"] == code
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_rooms_and_participants_are_listed(client: TestClient[Any, Any]) -> None:
    ann, ann_id = await join(client, "standup", "ann")
    bob, _ = await join(client, "standup", "bob")
    other, _ = await join(client, "retro", "cid")
    response = await client.get("/api/rooms", headers=bearer())
    assert response.status == 200
    rooms = {r["room"]: r for r in (await response.json())["rooms"]}
    assert rooms["standup"]["participants"] == 2 and rooms["retro"]["participants"] == 1
    # a room's own admin sees that room, not another
    response = await client.get("/api/rooms/standup", headers=bearer(room="standup"))
    assert response.status == 200
    people = {p["identity"]: p for p in (await response.json())["participants"]}
    assert set(people) == {"ann", "bob"} and people["ann"]["participantId"] == ann_id
    assert people["ann"]["connected"] is False and people["ann"]["tracks"] == []
    assert (await client.get("/api/rooms/retro", headers=bearer(room="standup"))).status == 403
    missing = await client.get("/api/rooms/nowhere", headers=bearer())
    assert missing.status == 404 and (await missing.json())["code"] == "unknown-room"
    for ws in (ann, bob, other):
        await ws.close()


async def test_removing_a_participant_ends_its_session(client: TestClient[Any, Any]) -> None:
    ann, ann_id = await join(client, "standup", "ann")
    bob, bob_id = await join(client, "standup", "bob")
    response = await client.delete(f"/api/rooms/standup/participants/{bob_id}", headers=bearer())
    assert response.status == 200 and (await response.json())["removed"] is True
    assert (await until(bob, "bye"))["reason"] == "removed"
    left = await until(ann, "participant-left")
    assert (left["participantId"], left["reason"]) == (bob_id, "removed")
    again = await client.delete(f"/api/rooms/standup/participants/{bob_id}", headers=bearer())
    assert again.status == 404 and (await again.json())["code"] == "unknown-participant"
    await ann.close()
    await bob.close()
    assert ann_id


async def test_closing_a_room_ends_every_session_in_it(client: TestClient[Any, Any]) -> None:
    ann, _ = await join(client, "standup", "ann")
    bob, _ = await join(client, "standup", "bob")
    cid, _ = await join(client, "retro", "cid")
    response = await client.delete("/api/rooms/standup", headers=bearer(room="standup"))
    assert response.status == 200
    for ws in (ann, bob):
        assert (await until(ws, "bye"))["reason"] == "room-closed"
    rooms = (await (await client.get("/api/rooms", headers=bearer())).json())["rooms"]
    assert [r["room"] for r in rooms] == ["retro"]  # the other room goes on
    await cid.send_json({"type": "mute", "trackId": "TR_x", "muted": True, "requestId": "m"})
    assert (await receive(cid))["code"] == "unknown-track"  # its session still answers
    for ws in (ann, bob, cid):
        await ws.close()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"muted": True}, 404, "unknown-track"),
        ({"muted": "yes"}, 400, "invalid-message"),
        (None, 400, "invalid-message"),
    ],
)
async def test_muting_what_is_not_there_says_so(
    client: TestClient[Any, Any], body: Json | None, status: int, code: str
) -> None:
    ann, _ = await join(client, "standup", "ann")
    response = await client.post(
        "/api/rooms/standup/tracks/TR_none/mute", headers=bearer(), json=body
    )
    assert response.status == status and (await response.json())["code"] == code
    await ann.close()


async def test_a_server_without_keys_has_an_open_api(
    sfu_service: RoomService,  # noqa: F811 - the fixture imported above
) -> None:
    async with TestClient(TestServer(create_app(sfu_service), host="127.0.0.1")) as client:
        response = await client.get("/api/rooms")
        assert response.status == 200 and (await response.json()) == {"rooms": []}
