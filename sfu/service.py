"""The in-process room service: rooms live in this process, created on first join."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog
from prometheus_client import CollectorRegistry

from sfu.api import (
    FULL_GRANTS,
    EventListener,
    Grants,
    ParticipantDetails,
    ParticipantInfo,
    ParticipantSession,
    RoomFull,
    RoomSummary,
    SessionClosed,
    TooManyRooms,
    TrackInfo,
    UnknownParticipant,
    UnknownRoom,
)
from sfu.config import MediaConfig
from sfu.counters import MediaTotals, participant_totals
from sfu.media import aiortc_bridge as bridge
from sfu.memory import MemoryReclaimer, freeze_startup
from sfu.metrics import build_registry
from sfu.participant import Participant
from sfu.room import REMOVED, ROOM_CLOSED, Room


class Sfu:
    """Implements :class:`sfu.api.RoomService` for the rooms hosted by this process."""

    def __init__(self, config: MediaConfig | None = None) -> None:
        self.config = config or MediaConfig()
        self.rooms_by_id: dict[str, Room] = {}
        self.log = structlog.get_logger("sfu")
        # for metrics: who is counted live, and the counters of those who left
        self.joined_total = 0
        self.left_total = 0
        self._counted: set[Participant] = set()
        self._departed = MediaTotals()
        self._registry: CollectorRegistry | None = None
        self._reclaimer = MemoryReclaimer()
        self._udp_port_open = False

    async def join(
        self,
        room_id: str,
        name: str,
        listener: EventListener,
        auto_subscribe: bool = True,
        *,
        identity: str | None = None,
        grants: Grants = FULL_GRANTS,
    ) -> tuple[ParticipantSession, tuple[ParticipantInfo, ...]]:
        room = self.rooms_by_id.get(room_id)
        if room is None:
            if len(self.rooms_by_id) >= self.config.max_rooms:
                raise TooManyRooms(
                    f"this server holds {len(self.rooms_by_id)} rooms, its limit: join an "
                    "existing room, or try later"
                )
            room = self.rooms_by_id[room_id] = Room(
                room_id, self._drop_room, self._participant_left
            )
            self.log.info("room created", room=room_id)
        if identity is not None:
            await room.replace_identity(identity)
        if len(room.participants) >= self.config.max_participants_per_room:
            raise RoomFull(f"room {room_id!r} has {len(room.participants)} participants")
        participant = Participant(
            room, name, listener, self.config, auto_subscribe, identity=identity, grants=grants
        )
        self._counted.add(participant)
        self.joined_total += 1
        return participant, room.add(participant)

    # --- the operator's ---

    async def rooms(self) -> tuple[RoomSummary, ...]:
        return tuple(
            RoomSummary(room.room_id, len(room.participants), room.track_count())
            for room in self.rooms_by_id.values()
        )

    async def room_participants(self, room_id: str) -> tuple[ParticipantDetails, ...]:
        return self._room(room_id).details()

    async def remove_participant(self, room_id: str, participant_id: str) -> None:
        room = self._room(room_id)
        participant = room.participants.get(participant_id)
        if participant is None:
            raise UnknownParticipant(f"room {room_id!r} has no participant {participant_id!r}")
        await room.end_session(participant, REMOVED)

    async def mute_track(self, room_id: str, track_id: str, muted: bool) -> TrackInfo:
        return self._room(room_id).block_track(track_id, muted)

    async def close_room(self, room_id: str) -> None:
        room = self._room(room_id)
        for participant in list(room.participants.values()):
            await room.end_session(participant, ROOM_CLOSED)

    def _room(self, room_id: str) -> Room:
        room = self.rooms_by_id.get(room_id)
        if room is None:
            raise UnknownRoom(f"there is no room {room_id!r}")
        return room

    def _participant_left(self, participant: Participant) -> None:
        if participant in self._counted:
            self._counted.discard(participant)
            self._departed.add(participant_totals(participant))
            self.left_total += 1
            self._reclaimer.departed()

    async def start(self) -> None:
        """Open what the media plane shares across participants: with ``config.udp_port`` set,
        the one UDP port (per ICE host address) every connection made from now on gathers on.
        OSError when it cannot be bound; :meth:`close` closes it."""
        if self.config.udp_port is not None and not self._udp_port_open:
            await bridge.use_udp_port(port=self.config.udp_port)
            self._udp_port_open = True

    def serving(self) -> None:
        """The process is set up and about to accept participants: what exists now stays, and
        the collections after departures need not walk it (:func:`sfu.memory.freeze_startup`)."""
        if not self._counted:
            freeze_startup()

    def _drop_room(self, room: Room) -> None:
        if self.rooms_by_id.get(room.room_id) is room and not room.participants:
            del self.rooms_by_id[room.room_id]
            self.log.info("room closed", room=room.room_id)

    async def stats(self) -> Mapping[str, int]:
        return {
            "rooms": len(self.rooms_by_id),
            "participants": sum(len(r.participants) for r in self.rooms_by_id.values()),
            "tracks": sum(r.track_count() for r in self.rooms_by_id.values()),
        }

    def media_totals(self) -> MediaTotals:
        """Counters of the media plane since start, participants who left included."""
        totals = self._departed.copy()
        for participant in self._counted:
            totals.add(participant_totals(participant))
        return totals

    def metrics_registry(self) -> CollectorRegistry:
        """The Prometheus registry of this service and process (see sfu.metrics)."""
        if self._registry is None:
            self._registry = build_registry(self)
        return self._registry

    async def close(self, reason: str = "server-shutdown") -> None:
        removals = []
        for room in list(self.rooms_by_id.values()):
            for participant in list(room.participants.values()):
                participant.emit(SessionClosed(reason))
                removals.append(room.remove(participant, reason))
        await asyncio.gather(*removals, return_exceptions=True)
        self._reclaimer.close()
        if self._udp_port_open:  # after the rooms: their connections' last sends go out on it
            bridge.stop_udp_port()
            self._udp_port_open = False
