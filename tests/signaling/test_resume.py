"""Session resume (docs/protocol.md, "Resuming a session"): a participant whose WebSocket drops
keeps its place for the resume window and takes its session over from a new WebSocket.

Over real WebSockets on 127.0.0.1: against the scripted service (events at chosen moments) and,
at the end, the real room service with two participants.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from sfu.api import ParticipantInfo, ParticipantJoined, RoomService, SessionClosed
from signaling.app import STATE, create_app
from signaling.resume import ATTACHED_KEEP, REPLAY_MESSAGES, ResumeFailed, Resumption
from tests.signaling.fakes import FakeService
from tests.signaling.test_app import sfu_service  # noqa: F401 - fixture, found by name

TIMEOUT = 5.0
WINDOW = 0.5

Json = dict[str, Any]
Socket = aiohttp.ClientWebSocketResponse


async def receive(ws: Socket) -> Json:
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.TEXT, msg
    data = json.loads(msg.data)
    assert isinstance(data, dict)
    return data


async def request(ws: Socket, **message: Any) -> Json:
    await ws.send_json(message)
    return await receive(ws)


def joined_event(n: int) -> ParticipantJoined:
    return ParticipantJoined(ParticipantInfo(f"other{n}", f"Other {n}"))


@pytest.fixture
async def fake() -> FakeService:
    return FakeService()


@pytest.fixture
async def app_client(fake: FakeService) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(fake, resume_window=WINDOW))) as test_client:
        yield test_client


async def join(client: TestClient[Any, Any]) -> tuple[Socket, Json]:
    ws = await client.ws_connect("/ws")
    joined = await request(ws, type="join", v=1, room="r", name="Ann")
    assert joined["type"] == "joined", joined
    early = await receive(ws)  # the fake raises participant-joined during the join
    assert (early["type"], early["seq"]) == ("participant-joined", 1)
    return ws, joined


async def resume(client: TestClient[Any, Any], token: str, last_seq: int) -> tuple[Socket, Json]:
    ws = await client.ws_connect("/ws")
    reply = await request(ws, type="resume", v=1, token=token, lastSeq=last_seq, requestId="r")
    return ws, reply


async def test_joined_grants_a_resume_token(app_client: TestClient[Any, Any]) -> None:
    ws, joined = await join(app_client)
    assert isinstance(joined["resumeToken"], str) and len(joined["resumeToken"]) >= 32
    assert joined["resumeWindow"] == WINDOW
    assert "seq" not in joined  # the reply to join is not part of the numbered stream
    await ws.send_json({"type": "leave"})
    assert (await receive(ws))["type"] == "left"


async def test_missed_messages_are_replayed_in_order(
    app_client: TestClient[Any, Any], fake: FakeService
) -> None:
    ws, joined = await join(app_client)
    participant = fake.participants[0]
    participant.listener(joined_event(2))
    assert (await receive(ws))["seq"] == 2
    # three messages read by the server (one of them refused), then the socket drops
    await ws.send_json({"type": "subscribe", "trackIds": ["t1"]})
    await ws.send_json({"type": "mute", "trackId": "x", "muted": True, "requestId": "m"})
    await ws.send_str("{not json")
    error = await receive(ws)
    assert (error["code"], error["seq"]) == ("unknown-track", 3)
    bad = await receive(ws)
    assert (bad["code"], bad["seq"]) == ("bad-json", 4)
    await ws.close()
    await asyncio.sleep(0.05)
    # the room goes on while no socket is attached
    participant.listener(joined_event(3))
    participant.listener(joined_event(4))

    new, resumed = await resume(app_client, joined["resumeToken"], 2)
    assert resumed["type"] == "resumed", resumed
    assert resumed["participantId"] == joined["participantId"] == "p1"
    assert (resumed["room"], resumed["requestId"], resumed["v"]) == ("r", "r", 1)
    assert resumed["received"] == 3  # the client sends again what it sent after these
    assert resumed["replayed"] == 4
    assert resumed["resumeToken"] != joined["resumeToken"]  # a used token is not good twice
    replayed = [await receive(new) for _ in range(4)]
    assert [m["seq"] for m in replayed] == [3, 4, 5, 6]
    assert [m.get("participant", {}).get("participantId") for m in replayed[2:]] == [
        "other3",
        "other4",
    ]
    # live again, and nobody left
    participant.listener(joined_event(5))
    assert (await receive(new))["seq"] == 7
    await asyncio.sleep(WINDOW + 0.2)
    assert participant.leave_reasons == []
    await new.send_json({"type": "leave"})
    left = await receive(new)
    assert (left["type"], left["seq"]) == ("left", 8)
    assert participant.leave_reasons == ["left"]


async def test_no_resume_in_the_window_leaves(
    app_client: TestClient[Any, Any], fake: FakeService
) -> None:
    ws, joined = await join(app_client)
    await ws.close()
    await asyncio.wait_for(fake.participants[0].left.wait(), WINDOW + TIMEOUT)
    assert fake.participants[0].leave_reasons == ["disconnected"]
    late, reply = await resume(app_client, joined["resumeToken"], 1)
    assert (reply["type"], reply["code"], reply["requestId"]) == ("error", "resume-failed", "r")
    # still not joined: a join on the same socket works
    assert (await request(late, type="join", v=1, room="r", name="Ann"))["type"] == "joined"
    await late.close()


async def test_resume_takes_over_a_socket_still_open(
    app_client: TestClient[Any, Any], fake: FakeService
) -> None:
    # the server has not noticed the drop (no pong missed yet) when the client comes back
    old, joined = await join(app_client)
    new, resumed = await resume(app_client, joined["resumeToken"], 1)
    assert (resumed["type"], resumed["replayed"]) == ("resumed", 0)
    msg = await old.receive(timeout=TIMEOUT)
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1000, "resumed")
    fake.participants[0].listener(joined_event(2))
    assert (await receive(new))["seq"] == 2
    await asyncio.sleep(WINDOW + 0.2)
    assert fake.participants[0].leave_reasons == []  # the old socket's close is no drop
    await new.close()


async def test_resume_is_refused_clearly(
    app_client: TestClient[Any, Any], fake: FakeService
) -> None:
    ws, joined = await join(app_client)
    token = joined["resumeToken"]
    # on a socket that has joined
    reply = await request(ws, type="resume", v=1, token=token, lastSeq=1)
    assert reply["code"] == "already-joined"
    await ws.close()
    probe = await app_client.ws_connect("/ws")
    for message, code in [
        ({"token": "not-a-token", "lastSeq": 0}, "resume-failed"),
        ({"token": token, "lastSeq": 99}, "resume-failed"),  # past what was sent
        ({"token": token}, "invalid-message"),
        ({"token": token, "lastSeq": -1}, "invalid-message"),
        ({"token": "", "lastSeq": 0}, "invalid-message"),
        ({"token": "x" * 129, "lastSeq": 0}, "invalid-message"),
        ({"token": token, "lastSeq": 0, "v": 2}, "unsupported-version"),
    ]:
        reply = await request(probe, **{"type": "resume", "v": 1, **message})
        assert (reply["type"], reply["code"]) == ("error", code), (message, reply)
    # none of that spent the token or the window
    new, resumed = await resume(app_client, token, 1)
    assert resumed["type"] == "resumed"
    assert fake.participants[0].leave_reasons == []
    await new.close()
    await probe.close()


async def test_a_left_or_closed_session_cannot_be_resumed(
    app_client: TestClient[Any, Any], fake: FakeService
) -> None:
    ann, ann_joined = await join(app_client)
    await ann.send_json({"type": "leave"})
    assert (await receive(ann))["type"] == "left"
    bob, bob_joined = await join(app_client)
    await bob.close()
    await asyncio.sleep(0.05)
    fake.participants[1].listener(SessionClosed("ice-failed"))  # while it waits for a resume
    for token in (ann_joined["resumeToken"], bob_joined["resumeToken"]):
        ws, reply = await resume(app_client, token, 1)
        assert reply["code"] == "resume-failed"
        await ws.close()


async def test_too_much_missed_ends_the_wait(
    app_client: TestClient[Any, Any], fake: FakeService
) -> None:
    ws, joined = await join(app_client)
    await ws.close()
    await asyncio.sleep(0.05)
    participant = fake.participants[0]
    for n in range(REPLAY_MESSAGES + 1):  # one more than is kept: a resume could not replay it
        participant.listener(joined_event(n))
    await asyncio.wait_for(participant.left.wait(), TIMEOUT)
    assert participant.leave_reasons == ["disconnected"]
    late, reply = await resume(app_client, joined["resumeToken"], 1)
    assert reply["code"] == "resume-failed"
    await late.close()


async def test_resume_off_leaves_at_once(fake: FakeService) -> None:
    async with TestClient(TestServer(create_app(fake, resume_window=0))) as client:
        ws = await client.ws_connect("/ws")
        joined = await request(ws, type="join", v=1, room="r", name="Ann")
        assert "resumeToken" not in joined
        await ws.close()
        await asyncio.wait_for(fake.participants[0].left.wait(), TIMEOUT)
        assert fake.participants[0].leave_reasons == ["disconnected"]


async def test_shutdown_ends_sessions_waiting_for_resume(fake: FakeService) -> None:
    app = create_app(fake, resume_window=60)
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/ws")
        assert (await request(ws, type="join", v=1, room="r", name="Ann"))["type"] == "joined"
        await ws.close()
        await asyncio.sleep(0.05)
        assert len(app[STATE].resumption) == 1
    # the room service told the waiting session bye: nothing waits, no timer is left behind
    assert len(app[STATE].resumption) == 0
    assert fake.participants[0].leave_reasons == []


# --- the real room service ---


async def test_others_see_no_leave_while_a_participant_resumes(
    sfu_service: RoomService,  # noqa: F811 - the fixture
) -> None:
    app = create_app(sfu_service, resume_window=WINDOW * 4)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        ann = await client.ws_connect("/ws")
        assert (await request(ann, type="join", v=1, room="x", name="Ann"))["type"] == "joined"
        bob = await client.ws_connect("/ws")
        bob_joined = await request(bob, type="join", v=1, room="x", name="Bob")
        assert (await receive(ann))["type"] == "participant-joined"
        await bob.close()
        await asyncio.sleep(WINDOW)
        health = await (await client.get("/healthz")).json()
        assert health["participants"] == 2
        new, resumed = await resume(client, bob_joined["resumeToken"], 0)
        assert resumed["participantId"] == bob_joined["participantId"]
        await new.send_json({"type": "leave"})
        assert (await receive(new))["type"] == "left"
        gone = await receive(ann)  # the first thing Ann hears since Bob joined
        assert (gone["type"], gone["reason"]) == ("participant-left", "left")
        await ann.close()


# --- the replay's bounds, without sockets ---


class _Sink:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def deliver(self, text: str) -> None:
        self.texts.append(text)

    def session_closed(self, reason: str) -> None:
        pass

    def taken_over(self) -> None:
        pass


async def test_an_attached_link_keeps_only_recent_messages() -> None:
    now = [0.0]
    link = Resumption(15.0, clock=lambda: now[0]).link("r")
    sink = _Sink()
    link.attach(sink, 0)
    for t, n in ((0.0, 1), (10.0, 2), (25.0, 3)):  # the first is older than ATTACHED_KEEP at 25 s
        now[0] = t
        link.send({"type": "x", "n": n})
    assert [json.loads(t)["seq"] for t in sink.texts] == [1, 2, 3]
    assert link.missed(0) == 2  # seq 1 was dropped: delivered 25 s ago, the socket lived on
    with pytest.raises(ResumeFailed, match="no longer kept"):
        link.check_resume(0)
    link.check_resume(1)  # a client that has seq 1 can resume
    # once detached, nothing is dropped for age: the client has not received any of it
    link.detach(sink)
    for n in range(4, 10):
        now[0] += ATTACHED_KEEP
        link.send({"type": "x", "n": n})
    assert link.missed(1) == 8
    link.end()  # its expiry timer goes
