"""The in-process room service: rooms live in this process, created on first join."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog

from sfu.api import EventListener, ParticipantInfo, ParticipantSession, RoomFull, SessionClosed
from sfu.config import MediaConfig
from sfu.participant import Participant
from sfu.room import Room


class Sfu:
    """Implements :class:`sfu.api.RoomService` for the rooms hosted by this process."""

    def __init__(self, config: MediaConfig | None = None) -> None:
        self.config = config or MediaConfig()
        self.rooms: dict[str, Room] = {}
        self.log = structlog.get_logger("sfu")

    async def join(
        self, room_id: str, name: str, listener: EventListener
    ) -> tuple[ParticipantSession, tuple[ParticipantInfo, ...]]:
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(room_id, self._drop_room)
            self.log.info("room created", room=room_id)
        if len(room.participants) >= self.config.max_participants_per_room:
            raise RoomFull(f"room {room_id!r} has {len(room.participants)} participants")
        participant = Participant(room, name, listener, self.config)
        return participant, room.add(participant)

    def _drop_room(self, room: Room) -> None:
        if self.rooms.get(room.room_id) is room and not room.participants:
            del self.rooms[room.room_id]
            self.log.info("room closed", room=room.room_id)

    def stats(self) -> Mapping[str, int]:
        return {
            "rooms": len(self.rooms),
            "participants": sum(len(r.participants) for r in self.rooms.values()),
            "tracks": sum(r.track_count() for r in self.rooms.values()),
        }

    async def close(self, reason: str = "server-shutdown") -> None:
        removals = []
        for room in list(self.rooms.values()):
            for participant in list(room.participants.values()):
                participant.emit(SessionClosed(reason))
                removals.append(room.remove(participant, reason))
        await asyncio.gather(*removals, return_exceptions=True)
