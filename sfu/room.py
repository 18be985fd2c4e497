"""A room: who is in it and what they publish. It owns the room's media state in one place."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from sfu.api import (
    Event,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    TrackInfo,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
)
from sfu.media.receiver import TrackReceiver
from sfu.participant import Participant


class Room:
    def __init__(
        self,
        room_id: str,
        on_empty: Callable[[Room], None],
        on_left: Callable[[Participant], None] | None = None,
    ) -> None:
        self.room_id = room_id
        self.participants: dict[str, Participant] = {}
        self._on_empty = on_empty
        self._on_left = on_left  # told once a participant has left and closed
        self.log = structlog.get_logger("sfu").bind(room=room_id)

    def info(self, participant: Participant) -> ParticipantInfo:
        return ParticipantInfo(
            participant.participant_id, participant.name, participant.info_tracks()
        )

    def add(self, participant: Participant) -> tuple[ParticipantInfo, ...]:
        """Admit ``participant``; returns who was already here and tells them."""
        others = tuple(self.info(p) for p in self.participants.values())
        self.participants[participant.participant_id] = participant
        self.broadcast(ParticipantJoined(self.info(participant)), exclude=participant)
        self.log.info("joined", participant=participant.participant_id, name=participant.name)
        participant.subscriptions_changed()
        return others

    async def remove(self, participant: Participant, reason: str) -> None:
        if self.participants.get(participant.participant_id) is not participant:
            return
        del self.participants[participant.participant_id]
        await participant.close()
        if self._on_left is not None:
            self._on_left(participant)
        self.broadcast(ParticipantLeft(participant.participant_id, reason))
        self.log.info("left", participant=participant.participant_id, reason=reason)
        if not self.participants:
            self._on_empty(self)

    def tracks_for(self, participant: Participant) -> list[TrackReceiver]:
        """Every track ``participant`` should receive: all the others publish."""
        return [
            track
            for other in self.participants.values()
            if other is not participant
            for track in other.published.values()
        ]

    def publish(self, publisher: Participant, track: TrackReceiver) -> None:
        self.broadcast(TrackPublished(track.info), exclude=publisher)
        self._renegotiate_all(exclude=publisher)

    def unpublish(self, publisher: Participant, track: TrackReceiver) -> None:
        self.broadcast(
            TrackUnpublished(publisher.participant_id, track.info.track_id), exclude=publisher
        )
        self._renegotiate_all(exclude=publisher)

    def track_muted(self, publisher: Participant, track: TrackInfo) -> None:
        event = TrackMuted(publisher.participant_id, track.track_id, track.muted)
        self.broadcast(event, exclude=publisher)

    def broadcast(self, event: Event, exclude: Participant | None = None) -> None:
        for participant in list(self.participants.values()):
            if participant is not exclude:
                participant.emit(event)

    def _renegotiate_all(self, exclude: Participant) -> None:
        for participant in self.participants.values():
            if participant is not exclude:
                participant.subscriptions_changed()

    def track_count(self) -> int:
        return sum(len(p.published) for p in self.participants.values())
