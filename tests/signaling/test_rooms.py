"""signaling/rooms.py: rooms spread over several room services, one home each.

Fakes for the table's bookkeeping (joins in flight, sessions ending either way, a worker lost
with sessions still ending late); two real in-process Sfus behind create_app for a call each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from aiohttp.test_utils import TestServer

from sfu import api
from sfu.config import MediaConfig
from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu.service import Sfu
from sfu_client import SfuClient
from signaling.app import create_app
from signaling.placement import WorkerLoad
from signaling.rooms import RoomRouter
from tests.signaling.tone_calls import close_all, tone_call


@dataclass
class Session:
    participant_id: str
    listener: api.EventListener
    left: list[str] = field(default_factory=list)

    async def offer(self, sdp: str, sources: Mapping[str, str]) -> api.Answer:
        return api.Answer(sdp)

    async def answer(self, sdp: str) -> None: ...

    async def add_ice_candidate(
        self, candidate: str | None, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None: ...

    async def set_muted(self, track_id: str, muted: bool) -> None: ...

    async def subscribe(self, track_ids: Sequence[str], subscribed: bool) -> None: ...

    async def set_track_settings(
        self, track_ids: Sequence[str], settings: api.TrackSettings
    ) -> None: ...

    async def leave(self, reason: str = "left") -> None:
        self.left.append(reason)


@dataclass
class Worker:
    index: int
    up: bool = True
    cpu: float = 0.0
    sessions: dict[str, list[Session]] = field(default_factory=dict)
    gate: asyncio.Event | None = None  # a join waits for it
    fail_join: bool = False
    fail_stats: bool = False

    async def join(
        self,
        room_id: str,
        name: str,
        listener: api.EventListener,
        auto_subscribe: bool = True,
        *,
        identity: str | None = None,
        grants: api.Grants = api.FULL_GRANTS,
    ) -> tuple[Session, tuple[api.ParticipantInfo, ...]]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_join:
            raise api.RoomFull(f"room {room_id!r} is full")
        session = Session(f"PA_{self.index}_{name}", listener)
        self.sessions.setdefault(room_id, []).append(session)
        return session, ()

    async def stats(self) -> Mapping[str, int]:
        if self.fail_stats:
            raise api.SfuError("the room service went away")
        people = sum(len(s) for s in self.sessions.values())
        return {"rooms": len(self.sessions), "participants": people, "tracks": 0}

    async def rooms(self) -> tuple[api.RoomSummary, ...]:
        return tuple(api.RoomSummary(r, len(s), 0) for r, s in self.sessions.items())

    async def room_participants(self, room_id: str) -> tuple[api.ParticipantDetails, ...]:
        return tuple(
            api.ParticipantDetails(s.participant_id, "x", None, True)
            for s in self.sessions.get(room_id, [])
        )

    async def remove_participant(self, room_id: str, participant_id: str) -> None: ...

    async def mute_track(self, room_id: str, track_id: str, muted: bool) -> api.TrackInfo:
        return api.TrackInfo(track_id, "PA", "video", muted=muted)

    async def close_room(self, room_id: str) -> None: ...

    async def close(self, reason: str = "server-shutdown") -> None:
        for sessions in self.sessions.values():
            for session in sessions:
                session.listener(api.SessionClosed(reason))


@dataclass
class Pool:
    workers: list[Worker]

    def loads(self) -> Sequence[WorkerLoad]:
        return [WorkerLoad(w.index, w.up, cpu=w.cpu) for w in self.workers]

    def service(self, index: int) -> api.RoomService | None:
        worker = self.workers[index]
        return worker if worker.up else None


def router(*cpu: float) -> tuple[RoomRouter, Pool]:
    pool = Pool([Worker(i, cpu=c) for i, c in enumerate(cpu)])
    clock = iter(range(1000))
    return RoomRouter(pool, lambda: float(next(clock)) * 10), pool


async def join(r: RoomRouter, room: str, name: str = "ann") -> api.ParticipantSession:
    session, _ = await r.join(room, name, lambda event: None)
    return session


async def test_a_room_lives_on_one_worker_and_new_rooms_go_to_the_least_loaded() -> None:
    r, pool = router(0.5, 0.1)
    await join(r, "a")
    await join(r, "b")
    await join(r, "a", "bob")
    assert {room: e.worker for room, e in r.table.rooms().items()} == {"a": 1, "b": 1}
    assert [len(s) for s in pool.workers[1].sessions.values()] == [2, 1]
    pool.workers[1].cpu = 0.9
    await join(r, "c")
    assert r.table.rooms()["c"].worker == 0


async def test_a_room_is_forgotten_when_its_last_session_ends_either_way() -> None:
    r, pool = router(0.1, 0.5)
    first, second = await join(r, "a"), await join(r, "a", "bob")
    await first.leave()
    await first.leave()  # twice: counted once
    assert "a" in r.table.rooms()
    pool.workers[0].sessions["a"][1].listener(api.SessionClosed("removed"))
    assert "a" not in r.table.rooms()
    await second.leave()  # after its SessionClosed: not counted again
    pool.workers[0].cpu = 0.9  # the room, new, goes elsewhere now
    await join(r, "a")
    assert r.table.rooms()["a"].worker == 1


async def test_a_join_in_flight_keeps_its_room_where_it_is() -> None:
    r, pool = router(0.1, 0.5)
    gate = pool.workers[0].gate = asyncio.Event()
    slow = asyncio.ensure_future(join(r, "a"))
    await asyncio.sleep(0)
    pool.workers[0].cpu = 0.9  # placement would now choose worker 1
    second = asyncio.ensure_future(join(r, "a", "bob"))
    await asyncio.sleep(0)
    assert r.table.rooms()["a"].joining == 2
    gate.set()
    await asyncio.gather(slow, second)
    assert r.table.rooms()["a"].worker == 0 and r.table.rooms()["a"].live == 2


async def test_a_refused_join_does_not_keep_a_room() -> None:
    r, pool = router(0.1)
    pool.workers[0].fail_join = True
    with pytest.raises(api.RoomFull):
        await join(r, "a")
    assert r.table.rooms() == {}


async def test_a_lost_worker_s_rooms_are_placed_anew_and_its_late_ends_touch_nothing() -> None:
    r, pool = router(0.1, 0.5)
    await join(r, "a")
    old = pool.workers[0].sessions["a"][0]
    pool.workers[0].up = False
    assert r.lost(0) == ["a"]
    await join(r, "a", "bob")  # the rejoin: worker 1 now
    entry = r.table.rooms()["a"]
    assert (entry.worker, entry.live) == (1, 1)
    old.listener(api.SessionClosed("reconnect"))  # the proxy's, late
    assert r.table.rooms()["a"] is entry and entry.live == 1


async def test_no_worker_up_refuses_a_new_room() -> None:
    r, pool = router(0.1)
    pool.workers[0].up = False
    with pytest.raises(api.SfuError, match="no worker"):
        await join(r, "a")
    assert r.table.rooms() == {}


async def test_the_operator_sees_every_worker_s_rooms() -> None:
    r, pool = router(0.1, 0.5)
    await join(r, "a")
    pool.workers[0].cpu = 0.9
    await join(r, "b")
    pool.workers[1].fail_stats = True  # one that fails meanwhile is left out
    assert await r.stats() == {"rooms": 1, "participants": 1, "tracks": 0}
    assert {room.room_id for room in await r.rooms()} == {"a", "b"}
    (details,) = await r.room_participants("b")
    assert details.participant_id == "PA_1_ann"
    with pytest.raises(api.UnknownRoom):
        await r.room_participants("c")
    with pytest.raises(api.UnknownRoom):
        await r.mute_track("c", "TR", True)
    assert (await r.mute_track("a", "TR", True)).muted


@dataclass
class InProcess:
    sfus: list[Sfu]

    def loads(self) -> Sequence[WorkerLoad]:
        return [WorkerLoad(i, True, cpu=0.01 * i) for i in range(len(self.sfus))]

    def service(self, index: int) -> api.RoomService | None:
        return self.sfus[index]


async def test_two_rooms_on_two_room_services_each_carry_their_call() -> None:
    set_ice_host_addresses(["127.0.0.1"])
    sfus = [Sfu(MediaConfig(ice_hosts=("127.0.0.1",))) for _ in range(2)]
    r = RoomRouter(InProcess(sfus))
    server = TestServer(create_app(r, resume_window=0), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/ws"))
    clients: list[SfuClient] = []
    try:
        for room in ("one", "two"):
            await tone_call(url, room, clients)
        assert [(await s.stats())["participants"] for s in sfus] == [2, 2]
        assert {room.room_id for room in await r.rooms()} == {"one", "two"}
    finally:
        await close_all(clients)
        await server.close()
        for sfu in sfus:
            await sfu.close()
        set_ice_host_addresses([])
    assert r.table.rooms() == {}
