"""Joining with access tokens (docs/protocol.md §5 ``join``), over real WebSockets on 127.0.0.1:
which joins a server with keys refuses and with which code, what an admitted join hands the
room service, and one identity replacing its earlier session in the real room service."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import structlog.testing
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from sfu.api import FULL_GRANTS, Grants, RoomService
from signaling.app import create_app
from signaling.tokens import create_token
from tests.signaling.fakes import FakeService
from tests.signaling.test_app import sfu_service  # noqa: F401 - fixture, found by name

TIMEOUT = 5.0
KEYS = {"main": "m" * 32, "old": "o" * 32}
Json = dict[str, Any]


async def receive(ws: aiohttp.ClientWebSocketResponse) -> Json:
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.TEXT, msg
    data = json.loads(msg.data)
    assert isinstance(data, dict)
    return data


async def join(client: TestClient[Any, Any], **fields: Any) -> tuple[Any, Json]:
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "join", "v": 1, "room": "r", "name": "Ann", **fields})
    return ws, await receive(ws)


def token(room: str = "r", identity: str = "ann", kid: str = "main", **options: Any) -> str:
    return create_token(KEYS, kid, room=room, identity=identity, **options)


@pytest.fixture
async def fake() -> FakeService:
    return FakeService()


@pytest.fixture
async def keyed(fake: FakeService) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(fake, keys=KEYS, resume_window=0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


@pytest.fixture
async def open_server(fake: FakeService) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(fake), host="127.0.0.1")) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({}, "token-required"),
        ({"token": "nonsense"}, "token-invalid"),
        ({"token": create_token({"x": "x" * 32}, "x", room="r", identity="a")}, "token-invalid"),
        ({"token": token(ttl=1, now=time.time() - 60)}, "token-expired"),
        ({"token": token(room="other")}, "token-wrong-room"),
        ({"token": "t" * 5000}, "invalid-message"),
    ],
)
async def test_joins_without_a_valid_token_are_refused(
    keyed: TestClient[Any, Any], fake: FakeService, fields: Json, code: str
) -> None:
    ws, reply = await join(keyed, requestId="1", **fields)
    assert reply["type"] == "error" and reply["code"] == code and reply["requestId"] == "1"
    assert fake.joins == []  # nothing reached the room service
    # the connection stays usable: a good token joins on it
    await ws.send_json({"type": "join", "v": 1, "room": "r", "name": "Ann", "token": token()})
    assert (await receive(ws))["type"] == "joined"
    await ws.close()


async def test_an_admitted_join_carries_the_tokens_identity_name_and_grants(
    keyed: TestClient[Any, Any], fake: FakeService
) -> None:
    grants = Grants(publish=False, sources=("screen",))
    ws, reply = await join(keyed, token=token(kid="old", name="Ann B.", grants=grants))
    assert reply["type"] == "joined"
    assert fake.joins == [("r", "Ann B.", "ann", grants)]  # the token's name wins
    await ws.close()


async def test_a_server_without_keys_admits_anyone_and_ignores_tokens(
    open_server: TestClient[Any, Any], fake: FakeService
) -> None:
    ws, reply = await join(open_server, token="whatever")
    assert reply["type"] == "joined"
    assert fake.joins == [("r", "Ann", None, FULL_GRANTS)]
    await ws.close()


async def test_tokens_never_reach_the_logs(keyed: TestClient[Any, Any]) -> None:
    secret = token(identity="logged")
    # every event logged, whatever renders them (other tests configure the output)
    with structlog.testing.capture_logs() as events:
        ws, _ = await join(keyed, token=secret)
        bad, _ = await join(keyed, token=secret[:-4] + "AAAA")
        await ws.close()
        await bad.close()
    logged = repr(events)
    assert "'identity': 'logged'" in logged  # the identity is logged, the token not
    assert secret.split(".")[2] not in logged and secret.split(".")[1] not in logged
    assert KEYS["main"] not in logged


async def test_a_second_session_of_an_identity_replaces_the_first(
    sfu_service: RoomService,  # noqa: F811 - the fixture imported above
) -> None:
    app = create_app(sfu_service, keys=KEYS, resume_window=0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        first, _ = await join(client, token=token())
        other, _ = await join(client, token=token(identity="bob"), name="Bob")
        second, reply = await join(client, token=token())
        assert reply["type"] == "joined"
        assert (await receive(first))["type"] == "participant-joined"  # bob
        bye = await receive(first)
        assert bye["type"] == "bye" and bye["reason"] == "duplicate-identity"
        assert (await first.receive(timeout=TIMEOUT)).type is WSMsgType.CLOSE
        left, joined = await receive(other), await receive(other)
        assert (left["type"], left["reason"]) == ("participant-left", "duplicate-identity")
        assert joined["type"] == "participant-joined"
        assert joined["participant"]["participantId"] == reply["participantId"]
        assert reply["participantId"] != left["participantId"]
        assert (await sfu_service.stats())["participants"] == 2  # replaced, not doubled
        for ws in (second, other):
            await ws.close()
