"""Which room service holds each room, when rooms are spread over workers (issue 13,
docs/design/scale-out-plan.md §3.3).

:class:`RoomRouter` is a :class:`~sfu.api.RoomService` for the signaling: a join for a room that
lives somewhere goes there, a join for a new room goes where :class:`~signaling.placement.Placement`
chooses. :class:`RoomTable` remembers where each room lives and counts the joins in flight and the
sessions live in it; a room is forgotten only when both are zero, so a join cannot open the room a
second time elsewhere while it still lives where it was. A worker lost (:meth:`RoomRouter.lost`)
takes its rooms out of the table at once: their sessions end with ``reconnect`` (the proxy's
doing), and the first rejoin places the room anew. Counting ends are tied to the table entry a
session joined, so the late end of a session of a lost worker never touches its room's new home.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sfu import api
from signaling.placement import Placement, WorkerLoad

T = TypeVar("T")


class Workers(Protocol):
    """What the router needs of a pool of room services (signaling/workers.py)."""

    def loads(self) -> Sequence[WorkerLoad]: ...

    def service(self, index: int) -> api.RoomService | None:
        """The room service of worker ``index`` while it is up."""
        ...


@dataclass(eq=False)
class RoomEntry:
    """Where one room lives, and who is in it or on the way."""

    room_id: str
    worker: int
    joining: int = 0
    live: int = 0


class RoomTable:
    def __init__(self) -> None:
        self._rooms: dict[str, RoomEntry] = {}

    def get(self, room_id: str) -> RoomEntry | None:
        return self._rooms.get(room_id)

    def begin(self, room_id: str, choose: Callable[[], int | None]) -> RoomEntry | None:
        """A join for ``room_id`` starts: its entry (``choose`` places a new room; None: no
        worker could take it, nothing is recorded)."""
        entry = self._rooms.get(room_id)
        if entry is None:
            worker = choose()
            if worker is None:
                return None
            entry = self._rooms[room_id] = RoomEntry(room_id, worker)
        entry.joining += 1
        return entry

    def joined(self, entry: RoomEntry, ok: bool) -> None:
        entry.joining -= 1
        entry.live += ok
        self._maybe_forget(entry)

    def ended(self, entry: RoomEntry) -> None:
        entry.live -= 1
        self._maybe_forget(entry)

    def drop_worker(self, worker: int) -> list[str]:
        """Forget every room of ``worker`` (it is gone); their ids."""
        dropped = [r for r, e in self._rooms.items() if e.worker == worker]
        for room_id in dropped:
            del self._rooms[room_id]
        return dropped

    def rooms(self) -> Mapping[str, RoomEntry]:
        return self._rooms

    def _maybe_forget(self, entry: RoomEntry) -> None:
        if entry.joining <= 0 and entry.live <= 0 and self._rooms.get(entry.room_id) is entry:
            del self._rooms[entry.room_id]


class RoomRouter:
    """A :class:`~sfu.api.RoomService` over several, a room in exactly one of them."""

    def __init__(self, workers: Workers, clock: Callable[[], float] = time.monotonic) -> None:
        self._workers = workers
        self._clock = clock
        self.table = RoomTable()
        self._placement = Placement()

    def lost(self, worker: int) -> list[str]:
        """Worker ``worker`` is gone: its rooms are placed anew at their next join."""
        return self.table.drop_worker(worker)

    def _choose(self) -> int | None:
        return self._placement.choose(self._workers.loads(), self._clock())

    def _service_of(self, entry: RoomEntry | None, room_id: str) -> api.RoomService:
        service = None if entry is None else self._workers.service(entry.worker)
        if service is None:
            raise api.UnknownRoom(f"there is no room {room_id!r}")
        return service

    async def join(
        self,
        room_id: str,
        name: str,
        listener: api.EventListener,
        auto_subscribe: bool = True,
        *,
        identity: str | None = None,
        grants: api.Grants = api.FULL_GRANTS,
    ) -> tuple[api.ParticipantSession, tuple[api.ParticipantInfo, ...]]:
        entry = self.table.begin(room_id, self._choose)
        if entry is None:
            if any(w.up and w.draining for w in self._workers.loads()):
                raise api.ServerDraining("this server is stopping and opens no new room")
            raise api.SfuError("no worker can take a room now: try again shortly")
        ended = Once(lambda: self.table.ended(entry))

        def relay(event: api.Event) -> None:
            if isinstance(event, api.SessionClosed):
                ended()
            listener(event)

        ok = False
        try:
            service = self._workers.service(entry.worker)
            if service is None:
                raise api.SfuError("the room's worker is restarting: join again shortly")
            session, others = await service.join(
                room_id, name, relay, auto_subscribe, identity=identity, grants=grants
            )
            ok = True
        finally:
            self.table.joined(entry, ok)
        return CountedSession(session, ended), others

    async def stats(self) -> Mapping[str, int]:
        totals = {"rooms": 0, "participants": 0, "tracks": 0}
        for counts in await self._each(lambda service: service.stats()):
            for key in totals:
                totals[key] += counts.get(key, 0)
        return totals

    async def rooms(self) -> tuple[api.RoomSummary, ...]:
        found = await self._each(lambda service: service.rooms())
        return tuple(room for rooms in found for room in rooms)

    async def room_participants(self, room_id: str) -> tuple[api.ParticipantDetails, ...]:
        return await self._service_of(self.table.get(room_id), room_id).room_participants(room_id)

    async def remove_participant(self, room_id: str, participant_id: str) -> None:
        service = self._service_of(self.table.get(room_id), room_id)
        await service.remove_participant(room_id, participant_id)

    async def mute_track(self, room_id: str, track_id: str, muted: bool) -> api.TrackInfo:
        service = self._service_of(self.table.get(room_id), room_id)
        return await service.mute_track(room_id, track_id, muted)

    async def close_room(self, room_id: str) -> None:
        await self._service_of(self.table.get(room_id), room_id).close_room(room_id)

    async def close(self, reason: str = "server-shutdown") -> None:
        await self._each(lambda service: service.close(reason))

    async def _each(self, call: Callable[[api.RoomService], Awaitable[T]]) -> list[T]:
        """``call`` on every worker up, at once; a worker that fails meanwhile is left out."""
        services = [
            s for w in self._workers.loads() if w.up and (s := self._workers.service(w.index))
        ]
        results = await asyncio.gather(*(call(s) for s in services), return_exceptions=True)
        return [r for r in results if not isinstance(r, BaseException)]


class JoinGate:
    """A :class:`~sfu.api.RoomService` that is ``service`` for everything but ``join``, which
    a subclass decides (refuses or routes) before handing it on."""

    def __init__(self, service: api.RoomService) -> None:
        self.stats = service.stats
        self.rooms = service.rooms
        self.room_participants = service.room_participants
        self.remove_participant = service.remove_participant
        self.mute_track = service.mute_track
        self.close_room = service.close_room
        self.close = service.close


async def join_counted(
    service: api.RoomService,
    ended: Callable[[], None],
    room_id: str,
    name: str,
    listener: api.EventListener,
    auto_subscribe: bool,
    identity: str | None,
    grants: api.Grants,
) -> tuple[api.ParticipantSession, tuple[api.ParticipantInfo, ...]]:
    """``service.join``, its session's end counted: ``ended`` is called once, at the first of
    the session's ``leave``, the :class:`~sfu.api.SessionClosed` its listener gets, or the join
    failing."""
    once = Once(ended)

    def relay(event: api.Event) -> None:
        if isinstance(event, api.SessionClosed):
            once()
        listener(event)

    try:
        session, others = await service.join(
            room_id, name, relay, auto_subscribe, identity=identity, grants=grants
        )
    except BaseException:
        once()
        raise
    return CountedSession(session, once), others


class Once:
    """``action``, the first time it is called; nothing after."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action: Callable[[], None] | None = action

    def __call__(self) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()


class CountedSession:
    """A session whose end is counted (``ended``, a :class:`Once`: whichever comes first, its
    ``leave`` or the :class:`~sfu.api.SessionClosed` its listener got, which the caller wires)."""

    def __init__(self, session: api.ParticipantSession, ended: Callable[[], None]) -> None:
        self._session, self._ended = session, ended
        self.offer = session.offer
        self.answer = session.answer
        self.add_ice_candidate = session.add_ice_candidate
        self.set_muted = session.set_muted
        self.subscribe = session.subscribe
        self.set_track_settings = session.set_track_settings

    @property
    def participant_id(self) -> str:
        return self._session.participant_id

    async def leave(self, reason: str = "left") -> None:
        try:
            await self._session.leave(reason)
        finally:
            self._ended()
