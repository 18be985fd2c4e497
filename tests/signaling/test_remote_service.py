"""sfu/remote: the room service across a stream (issue 13 step S8).

A ServiceHost around a room service at one end of a socket pair, a RemoteRoomService at the
other: the real Sfu with real aiortc clients through the signaling app, and table-driven fakes
for the order of events and replies, errors, cancellation and the stream's end.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from sfu import api
from sfu.config import MediaConfig
from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu.remote.frames import read_frame, write_frame
from sfu.remote.host import ServiceHost
from sfu.remote.proxy import RECONNECT, RemoteRoomService
from sfu.service import Sfu
from sfu_client import SfuClient, ToneAudioTrack
from signaling.app import create_app

TIMEOUT = 20.0


@dataclass
class Ends:
    proxy: RemoteRoomService
    host: asyncio.Task[None]
    host_writer: asyncio.StreamWriter


async def connect(service: api.RoomService) -> Ends:
    left, right = socket.socketpair()
    host_reader, host_writer = await asyncio.open_connection(sock=left)
    proxy_reader, proxy_writer = await asyncio.open_connection(sock=right)
    host = asyncio.ensure_future(ServiceHost(service, host_reader, host_writer).run())
    return Ends(RemoteRoomService(proxy_reader, proxy_writer), host, host_writer)


@pytest.fixture
async def sfu() -> AsyncIterator[Sfu]:
    set_ice_host_addresses(["127.0.0.1"])
    service = Sfu(MediaConfig(ice_hosts=("127.0.0.1",)))
    try:
        yield service
    finally:
        await service.close()
        set_ice_host_addresses([])


async def test_a_call_through_the_proxy_carries_media(sfu: Sfu) -> None:
    ends = await connect(sfu)
    server = TestServer(create_app(ends.proxy, resume_window=0), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/ws"))
    clients: list[SfuClient] = []
    try:
        alice = await SfuClient.connect(url, "remote", "alice")
        clients.append(alice)
        await alice.publish(ToneAudioTrack(440.0), source="microphone")
        bob = await SfuClient.connect(url, "remote", "bob")
        clients.append(bob)
        assert alice.participant_id is not None
        remote = await bob.wait_for_track(alice.participant_id, "audio", TIMEOUT)
        frames = [await asyncio.wait_for(remote.track.recv(), TIMEOUT) for _ in range(5)]
        assert len(frames) == 5
        # the operator's queries cross too
        assert (await ends.proxy.stats())["participants"] == 2
        (room,) = await ends.proxy.rooms()
        assert (room.room_id, room.participants, room.tracks) == ("remote", 2, 1)
        names = {p.name for p in await ends.proxy.room_participants("remote")}
        assert names == {"alice", "bob"}
        with pytest.raises(api.UnknownRoom):
            await ends.proxy.room_participants("nowhere")
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        for client in clients:
            for local in client.local_tracks.values():
                local.track.stop()
        await server.close()
        await ends.proxy.aclose()
        await asyncio.wait_for(ends.host, TIMEOUT)
    assert (await sfu.stats())["participants"] == 0  # the stream's end: every session left


# --- a fake room service: what each call does, recorded ---


@dataclass
class FakeSession:
    service: FakeService
    listener: api.EventListener
    participant_id: str = "PA_1"
    left: list[str] = field(default_factory=list)

    async def offer(self, sdp: str, sources: Mapping[str, str]) -> api.Answer:
        return await self.service.on_offer(self, sdp)

    async def answer(self, sdp: str) -> None:
        if sdp == "bad":
            raise api.InvalidSdp("the answer is not SDP")

    async def add_ice_candidate(
        self, candidate: str | None, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        self.service.candidates.append((candidate, sdp_mid, sdp_mline_index))

    async def set_muted(self, track_id: str, muted: bool) -> None:
        raise RuntimeError("a defect in the room service")

    async def subscribe(self, track_ids: Sequence[str], subscribed: bool) -> None:
        raise api.UnknownTrack(f"no track {track_ids[0]!r}")

    async def set_track_settings(
        self, track_ids: Sequence[str], settings: api.TrackSettings
    ) -> None:
        self.service.settings.append(settings)

    async def leave(self, reason: str = "left") -> None:
        self.left.append(reason)


@dataclass
class FakeService:
    sessions: list[FakeSession] = field(default_factory=list)
    candidates: list[tuple[str | None, str | None, int | None]] = field(default_factory=list)
    settings: list[api.TrackSettings] = field(default_factory=list)
    offer_delay: float = 0.0

    async def on_offer(self, session: FakeSession, sdp: str) -> api.Answer:
        # glare: the server's own offer, abandoned, is emitted during the client's offer
        session.listener(api.ServerOffer("server-offer", {}))
        await asyncio.sleep(self.offer_delay)
        return api.Answer("answer to " + sdp, (api.PublishedTrack("0", "TR_1", "audio"),))

    async def join(
        self,
        room_id: str,
        name: str,
        listener: api.EventListener,
        auto_subscribe: bool = True,
        *,
        identity: str | None = None,
        grants: api.Grants = api.FULL_GRANTS,
    ) -> tuple[FakeSession, tuple[api.ParticipantInfo, ...]]:
        if room_id == "full":
            raise api.RoomFull("room 'full' has 2 participants")
        session = FakeSession(self, listener, f"PA_{len(self.sessions) + 1}")
        self.sessions.append(session)
        return session, (api.ParticipantInfo("PA_0", "earlier", ()),)

    async def stats(self) -> Mapping[str, int]:
        return {"rooms": 1, "participants": len(self.sessions), "tracks": 0}

    async def rooms(self) -> tuple[api.RoomSummary, ...]:
        return ()

    async def room_participants(self, room_id: str) -> tuple[api.ParticipantDetails, ...]:
        raise api.UnknownRoom(f"there is no room {room_id!r}")

    async def remove_participant(self, room_id: str, participant_id: str) -> None:
        self.sessions[0].listener(api.SessionClosed("removed"))

    async def mute_track(self, room_id: str, track_id: str, muted: bool) -> api.TrackInfo:
        return api.TrackInfo(track_id, "PA_1", "video", muted=muted)

    async def close_room(self, room_id: str) -> None:
        pass

    async def close(self, reason: str = "server-shutdown") -> None:
        for session in self.sessions:
            session.listener(api.SessionClosed(reason))


async def joined(
    ends: Ends, room: str = "r"
) -> tuple[api.ParticipantSession, list[object], tuple[api.ParticipantInfo, ...]]:
    seen: list[object] = []
    session, others = await ends.proxy.join(room, "ann", seen.append)
    return session, seen, others


async def test_an_event_raised_during_a_call_reaches_the_listener_before_the_reply() -> None:
    ends = await connect(FakeService())
    session, seen, others = await joined(ends)
    assert others == (api.ParticipantInfo("PA_0", "earlier", ()),)
    answer = await session.offer("client-offer", {"0": "microphone"})
    seen.append(answer)
    assert seen == [
        api.ServerOffer("server-offer", {}),
        api.Answer("answer to client-offer", (api.PublishedTrack("0", "TR_1", "audio"),)),
    ]
    await ends.proxy.aclose()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ("answer", api.InvalidSdp, "the answer is not SDP"),
        ("subscribe", api.UnknownTrack, "no track 'TR_9'"),
        ("mute", api.SfuError, "the room service failed"),  # not the defect's own text
    ],
)
async def test_errors_keep_their_class_and_code(
    call: str, error: type[api.SfuError], message: str
) -> None:
    ends = await connect(FakeService())
    session, _, _ = await joined(ends)
    with pytest.raises(error, match=message) as raised:
        if call == "answer":
            await session.answer("bad")
        elif call == "subscribe":
            await session.subscribe(["TR_9"], True)
        else:
            await session.set_muted("TR_1", True)
    assert type(raised.value) is error and raised.value.code == error.code
    await session.add_ice_candidate(None, "0", None)  # the session goes on
    await ends.proxy.aclose()


async def test_a_join_refused_leaves_no_listener_and_others_work() -> None:
    service = FakeService()
    ends = await connect(service)
    with pytest.raises(api.RoomFull):
        await ends.proxy.join("full", "ann", lambda event: None)
    session, _, _ = await joined(ends)
    await session.set_track_settings(["TR_1"], api.TrackSettings(max_layer=1))
    await session.add_ice_candidate("candidate:1 1 udp 1 127.0.0.1 9 typ host", "0", 0)
    assert service.settings == [api.TrackSettings(max_layer=1)]
    assert service.candidates[-1] == ("candidate:1 1 udp 1 127.0.0.1 9 typ host", "0", 0)
    track = await ends.proxy.mute_track("r", "TR_1", True)
    assert track == api.TrackInfo("TR_1", "PA_1", "video", muted=True)
    await ends.proxy.aclose()


async def test_the_stream_s_end_closes_every_session_with_reconnect_and_fails_calls() -> None:
    service = FakeService(offer_delay=30.0)
    ends = await connect(service)
    first, seen_first, _ = await joined(ends)
    _, seen_second, _ = await joined(ends)
    waiting = asyncio.ensure_future(first.offer("x", {}))
    await asyncio.sleep(0.05)  # the offer is at the host
    ends.host.cancel()  # the worker dies: its end of the stream goes
    ends.host_writer.transport.abort()
    with pytest.raises(api.SfuError, match="went away"):
        await asyncio.wait_for(waiting, TIMEOUT)
    assert seen_first[-1] == api.SessionClosed(RECONNECT)
    assert seen_second == [api.SessionClosed(RECONNECT)]
    with pytest.raises(api.SfuError, match="went away"):
        await ends.proxy.stats()
    await first.leave()  # a no-op now, not an error
    await ends.proxy.aclose()


async def test_a_session_closed_by_the_service_stops_its_events() -> None:
    service = FakeService()
    ends = await connect(service)
    session, seen, _ = await joined(ends)
    await ends.proxy.remove_participant("r", "PA_1")
    assert seen == [api.SessionClosed("removed")]
    await session.leave()  # the host forgot it: leave is idempotent
    await ends.proxy.aclose()


async def test_a_cancelled_call_s_late_reply_is_dropped() -> None:
    service = FakeService(offer_delay=0.2)
    ends = await connect(service)
    session, _, _ = await joined(ends)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(session.offer("slow", {}), 0.05)
    await asyncio.sleep(0.3)  # its reply came and went
    assert (await ends.proxy.stats())["participants"] == 1
    await ends.proxy.aclose()


async def test_the_host_s_stream_end_makes_its_sessions_leave() -> None:
    service = FakeService()
    ends = await connect(service)
    await joined(ends)
    await ends.proxy.aclose()
    await asyncio.wait_for(ends.host, TIMEOUT)
    assert service.sessions[0].left == ["disconnected"]


@pytest.mark.parametrize(
    "frame",
    [
        {"id": 1, "op": "launch"},
        {"id": 2, "op": "offer", "sid": "S404", "args": {"sdp": "x", "sources": {}}},
        {"id": 3, "op": "join", "sid": "S1", "args": {"room": 7}},
        {"id": 4, "op": "stats", "args": []},
        {"id": 5, "op": "candidate", "sid": "S1", "args": {"sdpMLineIndex": True}},
    ],
)
async def test_a_request_the_host_cannot_read_gets_an_error_and_the_host_goes_on(
    frame: dict[str, Any],
) -> None:
    left, right = socket.socketpair()
    host_reader, host_writer = await asyncio.open_connection(sock=left)
    reader, writer = await asyncio.open_connection(sock=right)
    host = asyncio.ensure_future(ServiceHost(FakeService(), host_reader, host_writer).run())
    write_frame(writer, frame)
    write_frame(writer, {"id": 99, "op": "stats", "args": {}})
    replies = [await read_frame(reader), await read_frame(reader)]
    assert replies[0] is not None and replies[0]["id"] == frame["id"]
    assert set(replies[0]["err"]) == {"code", "message"} and replies[0]["err"]["message"]
    assert replies[1] is not None and replies[1]["ok"]["rooms"] == 1
    writer.close()
    await asyncio.wait_for(host, TIMEOUT)
