"""TURN servers for clients (docs/protocol.md §5 ``joined``, ``resumed``; docs/operations.md
"TURN"): what ``joined`` and ``resumed`` carry over real WebSockets on 127.0.0.1, and the
``sfu serve`` options that configure them, refused when they make no sense."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from signaling.app import create_app
from signaling.cli import main
from signaling.turn import TurnConfig, credentials
from tests.signaling.fakes import FakeService

TIMEOUT = 5.0
SECRET = "turn-shared-secret"
URLS = ("turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp")
TTL = 3600
Json = dict[str, Any]


async def receive(ws: aiohttp.ClientWebSocketResponse) -> Json:
    while True:
        msg = await ws.receive(timeout=TIMEOUT)
        assert msg.type is WSMsgType.TEXT, msg
        data = json.loads(msg.data)
        assert isinstance(data, dict)
        if data["type"] != "participant-joined":  # the fake raises one during the join
            return data


async def serve(turn: TurnConfig | None) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(FakeService(), turn=turn, resume_window=5.0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


@pytest.fixture
async def with_turn() -> AsyncIterator[TestClient[Any, Any]]:
    async for client in serve(TurnConfig(URLS, SECRET, TTL)):
        yield client


@pytest.fixture
async def without_turn() -> AsyncIterator[TestClient[Any, Any]]:
    async for client in serve(None):
        yield client


def assert_fresh_credentials(message: Json, before: float) -> None:
    [server] = message["iceServers"]
    assert server["urls"] == list(URLS)
    expiry, _, user = server["username"].partition(":")
    assert user == message["participantId"]
    assert int(before) + TTL <= int(expiry) <= int(time.time()) + TTL
    assert server["credential"] == credentials(SECRET, user, int(expiry))[1]


async def test_joined_and_resumed_carry_credentials_for_the_participant(
    with_turn: TestClient[Any, Any],
) -> None:
    before = time.time()
    ws = await with_turn.ws_connect("/ws")
    await ws.send_json({"type": "join", "v": 1, "room": "r", "name": "Ann"})
    joined = await receive(ws)
    assert joined["type"] == "joined", joined
    assert_fresh_credentials(joined, before)
    await ws.close()

    again = await with_turn.ws_connect("/ws")
    await again.send_json({"type": "resume", "v": 1, "token": joined["resumeToken"], "lastSeq": 1})
    resumed = await receive(again)
    assert resumed["type"] == "resumed", resumed
    assert_fresh_credentials(resumed, before)
    await again.close()


async def test_without_turn_servers_there_is_no_ice_servers_field(
    without_turn: TestClient[Any, Any],
) -> None:
    ws = await without_turn.ws_connect("/ws")
    await ws.send_json({"type": "join", "v": 1, "room": "r", "name": "Ann"})
    joined = await receive(ws)
    assert joined["type"] == "joined" and "iceServers" not in joined, joined
    await ws.close()


@pytest.mark.parametrize(
    ("arguments", "env", "message"),
    [
        (["--turn-url", "http://turn.example.com"], {}, "is not a TURN URL: expected turn:HOST"),
        (["--turn-url", "stun:127.0.0.1:3478"], {"SFU_TURN_SECRET": "s"}, "is not a TURN URL"),
        ([], {"SFU_TURN_URL": "turn:127.0.0.1 ftp://x"}, "'ftp://x' is not a TURN URL"),
        (["--turn-url", "turn:127.0.0.1:3478"], {}, "--turn-url needs the TURN servers' shared"),
        (["--turn-secret", "s"], {}, "a TURN secret without --turn-url"),
    ],
)
def test_serve_refuses_turn_options_that_make_no_sense(
    arguments: list[str], env: dict[str, str], message: str
) -> None:
    result = CliRunner().invoke(main, ["serve", *arguments], env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "secret"
    empty.write_text("\n")
    arguments = ["serve", "--turn-url", "turn:127.0.0.1", "--turn-secret-file", str(empty)]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2, result.output
    assert "holds no TURN secret" in result.output
