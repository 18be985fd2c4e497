"""The in-process room service: rooms live in this process, created on first join."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog
from prometheus_client import CollectorRegistry

from sfu.api import EventListener, ParticipantInfo, ParticipantSession, RoomFull, SessionClosed
from sfu.config import MediaConfig
from sfu.counters import MediaTotals, participant_totals
from sfu.memory import MemoryReclaimer, freeze_startup
from sfu.metrics import build_registry
from sfu.participant import Participant
from sfu.room import Room


class Sfu:
    """Implements :class:`sfu.api.RoomService` for the rooms hosted by this process."""

    def __init__(self, config: MediaConfig | None = None) -> None:
        self.config = config or MediaConfig()
        self.rooms: dict[str, Room] = {}
        self.log = structlog.get_logger("sfu")
        # for metrics: who is counted live, and the counters of those who left
        self.joined_total = 0
        self.left_total = 0
        self._counted: set[Participant] = set()
        self._departed = MediaTotals()
        self._registry: CollectorRegistry | None = None
        self._reclaimer = MemoryReclaimer()

    async def join(
        self, room_id: str, name: str, listener: EventListener, auto_subscribe: bool = True
    ) -> tuple[ParticipantSession, tuple[ParticipantInfo, ...]]:
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(room_id, self._drop_room, self._participant_left)
            self.log.info("room created", room=room_id)
        if len(room.participants) >= self.config.max_participants_per_room:
            raise RoomFull(f"room {room_id!r} has {len(room.participants)} participants")
        participant = Participant(room, name, listener, self.config, auto_subscribe)
        self._counted.add(participant)
        self.joined_total += 1
        return participant, room.add(participant)

    def _participant_left(self, participant: Participant) -> None:
        if participant in self._counted:
            self._counted.discard(participant)
            self._departed.add(participant_totals(participant))
            self.left_total += 1
            self._reclaimer.departed()

    def serving(self) -> None:
        """The process is set up and about to accept participants: what exists now stays, and
        the collections after departures need not walk it (:func:`sfu.memory.freeze_startup`)."""
        if not self._counted:
            freeze_startup()

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
        for room in list(self.rooms.values()):
            for participant in list(room.participants.values()):
                participant.emit(SessionClosed(reason))
                removals.append(room.remove(participant, reason))
        await asyncio.gather(*removals, return_exceptions=True)
        self._reclaimer.close()
