"""The signaling app over real WebSockets on 127.0.0.1.

The first part runs against the real room service (``sfu.service.Sfu``); the second against a
scripted fake, for what the real one cannot be made to do on demand (fail, close a session).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from sfu.api import (
    LayerActivity,
    PublisherLayers,
    RoomService,
    SessionClosed,
    TrackMuted,
    TrackSettings,
)
from sfu.config import MediaConfig
from sfu.media.aiortc_bridge import set_ice_host_addresses
from signaling.app import create_app
from signaling.session import OUTBOX_LIMIT
from tests.signaling.fakes import FakeService

TIMEOUT = 5.0
MAX_MESSAGE_SIZE = 8192

Json = dict[str, Any]

#: parses, but no ICE username fragment and password: the service must refuse it
NO_ICE_CREDENTIALS = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
)


async def receive(ws: aiohttp.ClientWebSocketResponse) -> Json:
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.TEXT, msg
    data = json.loads(msg.data)
    assert isinstance(data, dict)
    # numbered after joined (test_resume.py checks the numbers); compared without them here
    assert isinstance(data.pop("seq", 0), int)
    return data


async def receive_type(ws: aiohttp.ClientWebSocketResponse, kind: str) -> Json:
    """The next message of type ``kind``, skipping others (offers the room may send)."""
    while True:
        message = await receive(ws)
        if message["type"] == kind:
            return message


async def request(ws: aiohttp.ClientWebSocketResponse, **message: Any) -> Json:
    await ws.send_json(message)
    return await receive(ws)


async def join(
    client: TestClient[Any, Any], room: str, name: str
) -> tuple[aiohttp.ClientWebSocketResponse, Json]:
    ws = await client.ws_connect("/ws")
    joined = await request(ws, type="join", v=1, room=room, name=name, requestId="j")
    assert joined["type"] == "joined", joined
    return ws, joined


async def expect_closed(ws: aiohttp.ClientWebSocketResponse) -> None:
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED), msg


async def health(client: TestClient[Any, Any]) -> Json:
    response = await client.get("/healthz")
    assert response.status == 200
    data = await response.json()
    assert isinstance(data, dict)
    return data


async def wait_for_health(client: TestClient[Any, Any], **expected: int) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            body = await health(client)
            if all(body.get(key) == value for key, value in expected.items()):
                return
            await asyncio.sleep(0.05)


# --- against the real room service ---


@pytest.fixture
async def sfu_service() -> AsyncIterator[RoomService]:
    service_module = pytest.importorskip("sfu.service")
    set_ice_host_addresses(["127.0.0.1"])
    service: RoomService = service_module.Sfu(MediaConfig(ice_hosts=("127.0.0.1",)))
    try:
        yield service
    finally:
        await service.close()
        set_ice_host_addresses([])


@pytest.fixture
async def client(sfu_service: RoomService) -> AsyncIterator[TestClient[Any, Any]]:
    # resume off: a closed WebSocket leaves at once (test_resume.py has it on)
    app = create_app(sfu_service, max_message_size=MAX_MESSAGE_SIZE, resume_window=0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def test_join(client: TestClient[Any, Any]) -> None:
    ws, joined = await join(client, "room-1", "Ann")
    assert joined["v"] == 1
    assert joined["room"] == "room-1"
    assert isinstance(joined["participantId"], str)
    assert joined["participantId"]
    assert joined["participants"] == []
    assert joined["requestId"] == "j"
    await ws.close()


async def test_two_participants_see_each_other(client: TestClient[Any, Any]) -> None:
    ann, ann_joined = await join(client, "room-1", "Ann")
    bob, bob_joined = await join(client, "room-1", "Bob")
    assert [(p["participantId"], p["name"], p["tracks"]) for p in bob_joined["participants"]] == [
        (ann_joined["participantId"], "Ann", [])
    ]
    seen = await receive_type(ann, "participant-joined")
    assert seen["participant"] == {
        "participantId": bob_joined["participantId"],
        "name": "Bob",
        "tracks": [],
    }
    await bob.close()
    gone = await receive_type(ann, "participant-left")
    assert gone["participantId"] == bob_joined["participantId"]
    assert isinstance(gone["reason"], str)
    await ann.close()


async def test_rooms_are_separate(client: TestClient[Any, Any]) -> None:
    ann, _ = await join(client, "room-1", "Ann")
    _bob, bob_joined = await join(client, "room-2", "Bob")
    assert bob_joined["participants"] == []
    await wait_for_health(client, rooms=2, participants=2)
    await ann.close()


async def test_healthz_counts(client: TestClient[Any, Any]) -> None:
    body = await health(client)
    assert body["status"] == "ok"
    assert body["participants"] == 0
    ann, _ = await join(client, "room-1", "Ann")
    bob, _ = await join(client, "room-1", "Bob")
    await wait_for_health(client, rooms=1, participants=2)
    await ann.close()
    await bob.close()
    await wait_for_health(client, participants=0)


async def test_malformed_json_then_join(client: TestClient[Any, Any]) -> None:
    ws = await client.ws_connect("/ws")
    await ws.send_str("{not json")
    error = await receive(ws)
    assert error["type"] == "error"
    assert error["code"] == "bad-json"
    assert error["message"]
    reply = await request(ws, type="dance", requestId="d")
    assert (reply["code"], reply["requestId"]) == ("invalid-message", "d")
    await ws.send_bytes(b"\x00")
    assert (await receive(ws))["code"] == "invalid-message"
    reply = await request(ws, type="join", v=1, room="no spaces", name="Ann")
    assert reply["code"] == "invalid-message"
    assert "room" in reply["message"]
    reply = await request(ws, type="join", v=2, room="room-1", name="Ann")
    assert reply["code"] == "unsupported-version"
    reply = await request(ws, type="join", v=1, room="room-1", name="Ann")
    assert reply["type"] == "joined"
    await ws.close()


async def test_oversize_message_closes_only_that_socket(client: TestClient[Any, Any]) -> None:
    ann, _ = await join(client, "room-1", "Ann")
    bob, bob_joined = await join(client, "room-1", "Bob")
    await receive_type(ann, "participant-joined")
    await bob.send_str(json.dumps({"type": "offer", "sdp": "x" * MAX_MESSAGE_SIZE}))
    msg = await bob.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    gone = await receive_type(ann, "participant-left")
    assert gone["participantId"] == bob_joined["participantId"]
    # ann's connection still works
    reply = await request(ann, type="join", v=1, room="room-1", name="Ann", requestId="again")
    assert (reply["code"], reply["requestId"]) == ("already-joined", "again")
    await wait_for_health(client, participants=1)
    await ann.close()


async def test_not_joined(client: TestClient[Any, Any]) -> None:
    ws = await client.ws_connect("/ws")
    for message in (
        {"type": "offer", "sdp": "v=0"},
        {"type": "answer", "sdp": "v=0"},
        {"type": "candidate", "candidate": None},
        {"type": "mute", "trackId": "t", "muted": True},
        {"type": "setTrackSettings", "trackIds": ["t"], "paused": True},
        {"type": "leave"},
    ):
        reply = await request(ws, **message, requestId="n")
        assert (reply["type"], reply["code"], reply["requestId"]) == ("error", "not-joined", "n")
    assert (await request(ws, type="join", v=1, room="r", name="Ann"))["type"] == "joined"
    await ws.close()


async def test_already_joined(client: TestClient[Any, Any]) -> None:
    ws, _ = await join(client, "room-1", "Ann")
    reply = await request(ws, type="join", v=1, room="room-2", name="Ann")
    assert reply["code"] == "already-joined"
    await wait_for_health(client, participants=1)
    await ws.close()


async def test_invalid_sdp_is_an_error_and_the_socket_stays(client: TestClient[Any, Any]) -> None:
    ws, _ = await join(client, "room-1", "Ann")
    reply = await request(ws, type="offer", sdp=NO_ICE_CREDENTIALS, requestId="o")
    assert (reply["type"], reply["code"], reply["requestId"]) == ("error", "invalid-sdp", "o")
    reply = await request(ws, type="mute", trackId="no-such-track", muted=True, requestId="m")
    assert (reply["code"], reply["requestId"]) == ("unknown-track", "m")
    await ws.close()


async def test_track_settings_of_unknown_tracks(client: TestClient[Any, Any]) -> None:
    """Errors as subscribe gets them; the connection stays usable."""
    ann, _ = await join(client, "room-1", "Ann")
    reply = await request(ann, type="setTrackSettings", trackIds=["TR_nope"], requestId="s")
    assert (reply["type"], reply["code"], reply["requestId"]) == ("error", "unknown-track", "s")
    assert "'TR_nope'" in reply["message"]
    reply = await request(ann, type="setTrackSettings", trackIds=["t"] * 513, maxHeight=0)
    assert reply["code"] == "invalid-message"
    assert reply["message"].startswith("trackIds: list should have at most 512 items")
    assert "maxHeight: input should be greater than or equal to 1" in reply["message"]
    reply = await request(ann, type="mute", trackId="none", muted=True, requestId="m")
    assert (reply["code"], reply["requestId"]) == ("unknown-track", "m")
    await ann.close()


async def test_leave(client: TestClient[Any, Any]) -> None:
    ann, _ = await join(client, "room-1", "Ann")
    bob, bob_joined = await join(client, "room-1", "Bob")
    assert await request(bob, type="leave", requestId="bye") == {"type": "left", "requestId": "bye"}
    await expect_closed(bob)
    gone = await receive_type(ann, "participant-left")
    assert gone == {
        "type": "participant-left",
        "participantId": bob_joined["participantId"],
        "reason": "left",
    }
    await wait_for_health(client, participants=1)
    await ann.close()


async def test_closed_websocket_is_disconnected(client: TestClient[Any, Any]) -> None:
    # docs/protocol.md: a WebSocket closed without leave is reason "disconnected", not "left"
    ann, _ = await join(client, "room-1", "Ann")
    bob, bob_joined = await join(client, "room-1", "Bob")
    await bob.close()
    gone = await receive_type(ann, "participant-left")
    assert (gone["participantId"], gone["reason"]) == (bob_joined["participantId"], "disconnected")
    await ann.close()


async def test_dead_client_is_dropped(sfu_service: RoomService) -> None:
    server = TestServer(create_app(sfu_service, heartbeat=0.2, resume_window=0), host="127.0.0.1")
    async with TestClient(server) as test_client:
        ann, _ = await join(test_client, "room-1", "Ann")
        # a client that never answers pings
        bob = await test_client.ws_connect("/ws", autoping=False)
        joined = await request(bob, type="join", v=1, room="room-1", name="Bob")
        gone = await receive_type(ann, "participant-left")
        assert gone["participantId"] == joined["participantId"]
        await wait_for_health(test_client, participants=1)
        await ann.close()


async def test_unjoined_websocket_is_closed(sfu_service: RoomService) -> None:
    server = TestServer(create_app(sfu_service, join_timeout=0.5), host="127.0.0.1")
    async with TestClient(server) as test_client:
        ann, _ = await join(test_client, "room-1", "Ann")
        idle = await test_client.ws_connect("/ws")
        # messages do not extend the time: it counts from opening the socket
        noisy = await test_client.ws_connect("/ws")
        assert (await request(noisy, type="leave"))["code"] == "not-joined"
        for ws in (idle, noisy):
            assert await receive_type(ws, "bye") == {"type": "bye", "reason": "join-timeout"}
            msg = await ws.receive(timeout=TIMEOUT)
            assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1008, "join-timeout")
        # Ann opened her socket before them and joined in time: she stays
        reply = await request(ann, type="mute", trackId="none", muted=True)
        assert reply["code"] == "unknown-track"
        await wait_for_health(test_client, participants=1)
        await ann.close()


async def test_answering_pings_does_not_keep_an_unjoined_websocket(
    sfu_service: RoomService,
) -> None:
    # the server pings more often than the join timeout, and the client answers every ping
    app = create_app(sfu_service, heartbeat=0.1, join_timeout=0.5)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        ws = await test_client.ws_connect("/ws")
        # one bound for all: receive()'s own timeout starts again at each ping
        async with asyncio.timeout(TIMEOUT):
            assert await receive_type(ws, "bye") == {"type": "bye", "reason": "join-timeout"}
            msg = await ws.receive()
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1008, "join-timeout")


async def test_shutdown_says_bye(sfu_service: RoomService) -> None:
    server = TestServer(create_app(sfu_service), host="127.0.0.1")
    async with TestClient(server) as test_client:
        ann, _ = await join(test_client, "room-1", "Ann")
        idle = await test_client.ws_connect("/ws")
        closing = asyncio.create_task(server.close())
        for ws in (ann, idle):
            assert await receive_type(ws, "bye") == {"type": "bye", "reason": "server-shutdown"}
            await expect_closed(ws)
        await asyncio.wait_for(closing, TIMEOUT)


async def test_cli_serve_and_sigterm(sfu_service: RoomService) -> None:
    # sfu_service only makes this test skip until the real service exists
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from signaling.cli import main; main()",
        "serve",
        "--port",
        "0",
        "--ice-host",
        "127.0.0.1",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "SFU_LOG_FORMAT": "json", "SFU_HOST": "127.0.0.1"},
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        prefix = b"aiosfu listening on http://127.0.0.1:"
        assert line.startswith(prefix), line
        port = int(line[len(prefix) :])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert (await response.json())["status"] == "ok"
            async with http.get(f"http://127.0.0.1:{port}/") as response:
                assert response.status == 200
            async with http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                joined = await request(ws, type="join", v=1, room="cli", name="Ann")
                assert joined["type"] == "joined"
                process.send_signal(signal.SIGTERM)
                assert await receive_type(ws, "bye") == {
                    "type": "bye",
                    "reason": "server-shutdown",
                }
                await expect_closed(ws)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("workers", [1, 2])
async def test_cli_serve_fails_at_start_when_its_udp_port_is_taken(
    sfu_service: RoomService, workers: int
) -> None:
    """In process or in worker 0 (which binds --udp-port itself): one clear line, exit 1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from signaling.cli import main; main()",
            "serve",
            "--port",
            "0",
            "--ice-host",
            "127.0.0.1",
            "--udp-port",
            str(port),
            "--workers",
            str(workers),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "SFU_LOG_FORMAT": "json", "SFU_HOST": "127.0.0.1"},
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert b"listening" not in stdout
    message = f"--udp-port {port}: cannot bind it on the ICE host addresses (127.0.0.1)"
    if workers == 1:
        assert f"Error: {message}".encode() in stderr
    else:
        assert f"Error: the media plane could not start: worker 0: {message}".encode() in stderr
    assert b"Traceback" not in stderr


# --- against a scripted service ---


@pytest.fixture
async def fake() -> FakeService:
    return FakeService()


@pytest.fixture
async def fake_client(fake: FakeService) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(
        TestServer(create_app(fake, resume_window=0), host="127.0.0.1")
    ) as test_client:
        yield test_client


async def test_events_follow_joined_then_go_in_order(fake_client: TestClient[Any, Any]) -> None:
    ws = await fake_client.ws_connect("/ws")
    # the fake raises participant-joined during join: it must come after joined
    assert (await request(ws, type="join", v=1, room="r", name="Ann"))["type"] == "joined"
    assert (await receive(ws))["type"] == "participant-joined"
    # the fake raises a server offer while handling the client offer: it comes before the answer,
    # as the (abandoned) offer of a glare that the client ignores
    await ws.send_json({"type": "offer", "sdp": "client-sdp", "tracks": {"0": {"source": "mic"}}})
    assert await receive(ws) == {"type": "offer", "sdp": "server-sdp", "tracks": {}}
    assert await receive(ws) == {
        "type": "answer",
        "sdp": "answer-sdp",
        "tracks": [{"mid": "0", "trackId": "t1", "kind": "audio"}],
    }
    await ws.close()


async def test_errors_keep_the_connection(
    fake_client: TestClient[Any, Any], fake: FakeService
) -> None:
    ws = await fake_client.ws_connect("/ws")
    reply = await request(ws, type="join", v=1, room="full", name="Ann", requestId="1")
    assert (reply["code"], reply["requestId"]) == ("room-full", "1")
    await request(ws, type="join", v=1, room="r", name="Ann")
    await receive(ws)  # participant-joined
    reply = await request(ws, type="offer", sdp="boom", requestId="2")
    assert (reply["code"], reply["requestId"]) == ("internal-error", "2")
    assert "scripted" not in reply["message"]
    reply = await request(ws, type="offer", sdp="bad", requestId="3")
    assert (reply["code"], reply["message"]) == ("invalid-sdp", "scripted invalid sdp")
    reply = await request(ws, type="mute", trackId="t9", muted=False)
    assert reply["code"] == "unknown-track"
    await ws.send_json({"type": "answer", "sdp": "a"})
    await ws.send_json({"type": "candidate", "candidate": "candidate:1", "sdpMid": "0"})
    await ws.send_json({"type": "candidate", "candidate": None})
    assert (await request(ws, type="leave"))["type"] == "left"
    await expect_closed(ws)
    assert fake.participants[0].calls[-3:] == [
        "answer a",
        "candidate candidate:1 0 None",
        "candidate None None None",
    ]
    assert fake.participants[0].leave_calls == 1


async def test_track_settings_are_passed_on(
    fake_client: TestClient[Any, Any], fake: FakeService
) -> None:
    """setTrackSettings reaches the session as TrackSettings; no reply unless it fails."""
    ws = await fake_client.ws_connect("/ws")
    await request(ws, type="join", v=1, room="r", name="Ann")
    await receive(ws)  # participant-joined
    await ws.send_json(
        {"type": "setTrackSettings", "trackIds": ["t1", "t2"], "maxWidth": 320, "maxHeight": 180}
    )
    await ws.send_json({"type": "setTrackSettings", "trackIds": ["t1"], "paused": True})
    await ws.send_json(
        {"type": "setTrackSettings", "trackIds": ["t2"], "maxLayer": 1, "maxTemporalLayer": 0}
    )
    reply = await request(ws, type="setTrackSettings", trackIds=["t1", "t9"], requestId="s")
    assert (reply["type"], reply["code"], reply["requestId"]) == ("error", "unknown-track", "s")
    reply = await request(ws, type="setTrackSettings", trackIds=["t1"], maxWidth=-1, requestId="w")
    assert (reply["code"], reply["requestId"]) == ("invalid-message", "w")
    assert reply["message"] == "maxWidth: input should be greater than or equal to 1"
    assert fake.participants[0].calls == [
        f"settings ['t1', 't2'] {TrackSettings(max_width=320, max_height=180)}",
        f"settings ['t1'] {TrackSettings(paused=True)}",
        f"settings ['t2'] {TrackSettings(max_layer=1, max_temporal_layer=0)}",
    ]
    # publisherLayers goes out as the room raises it
    fake.participants[0].listener(
        PublisherLayers("t1", (LayerActivity("q", True), LayerActivity("h", False)))
    )
    assert await receive(ws) == {
        "type": "publisherLayers",
        "trackId": "t1",
        "layers": [{"rid": "q", "active": True}, {"rid": "h", "active": False}],
    }
    await ws.close()


async def test_disconnect_leaves_once(fake_client: TestClient[Any, Any], fake: FakeService) -> None:
    ws = await fake_client.ws_connect("/ws")
    await request(ws, type="join", v=1, room="r", name="Ann")
    await ws.close()
    await asyncio.wait_for(fake.participants[0].left.wait(), TIMEOUT)
    await asyncio.sleep(0.1)
    assert fake.participants[0].leave_calls == 1
    assert fake.participants[0].leave_reasons == ["disconnected"]


async def test_session_closed_sends_bye(
    fake_client: TestClient[Any, Any], fake: FakeService
) -> None:
    ws = await fake_client.ws_connect("/ws")
    await request(ws, type="join", v=1, room="r", name="Ann")
    await receive(ws)  # participant-joined
    fake.participants[0].listener(SessionClosed("ice-failed"))
    assert await receive(ws) == {"type": "bye", "reason": "ice-failed"}
    await expect_closed(ws)
    await asyncio.wait_for(fake.participants[0].left.wait(), TIMEOUT)
    assert fake.participants[0].leave_calls == 1


async def test_static_index(fake_client: TestClient[Any, Any]) -> None:
    response = await fake_client.get("/")
    assert response.status == 200
    assert '<script type="module" src="app.js">' in await response.text()
    response = await fake_client.get("/index.html")
    assert response.status == 200
    for module in ("app.js", "sfu-client.js", "sfu-stats.js", "adaptive-stream.js"):
        response = await fake_client.get(f"/{module}")
        assert response.status == 200
        # browsers run an ES module only when it is served as JavaScript
        assert response.content_type in ("text/javascript", "application/javascript")
    response = await fake_client.get("/../pyproject.toml")
    assert response.status == 404


async def test_client_that_does_not_read_is_closed(
    fake_client: TestClient[Any, Any], fake: FakeService
) -> None:
    ws = await fake_client.ws_connect("/ws")
    await request(ws, type="join", v=1, room="r", name="Ann")
    participant = fake.participants[0]
    # more events in one go than the session queues for a client
    for i in range(OUTBOX_LIMIT + 10):
        participant.listener(TrackMuted("p9", f"t{i}", True))
    while True:
        msg = await ws.receive(timeout=TIMEOUT)
        if msg.type is not WSMsgType.TEXT:
            break
    assert msg.type is WSMsgType.CLOSE
    assert (msg.data, msg.extra) == (aiohttp.WSCloseCode.POLICY_VIOLATION, "slow-consumer")
    await asyncio.wait_for(participant.left.wait(), TIMEOUT)
    assert participant.leave_calls == 1
