"""A room: who is in it and what they publish. It owns the room's media state in one place."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import structlog

from sfu.api import (
    Event,
    ParticipantDetails,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    SessionClosed,
    TrackInfo,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
    UnknownTrack,
)
from sfu.media.receiver import TrackReceiver
from sfu.participant import Participant

#: why a participant left when another session joined with its identity
DUPLICATE_IDENTITY = "duplicate-identity"
#: why participants left whom the operator removed, or whose room the operator closed
REMOVED, ROOM_CLOSED = "removed", "room-closed"


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

    async def end_session(self, participant: Participant, reason: str) -> None:
        """The server ends ``participant``'s session: it is told (``bye``), the others see it
        leave with ``reason``."""
        participant.emit(SessionClosed(reason))
        await self.remove(participant, reason)

    def details(self) -> tuple[ParticipantDetails, ...]:
        return tuple(
            ParticipantDetails(
                p.participant_id, p.name, p.identity, p.connection.connected, p.info_tracks()
            )
            for p in self.participants.values()
        )

    def block_track(self, track_id: str, blocked: bool) -> TrackInfo:
        """The operator mutes (or unmutes) a published track: it reaches no one, the others
        see it muted, its publisher is told; UnknownTrack if no one here publishes it."""
        for publisher in self.participants.values():
            for track in publisher.published.values():
                if track.info.track_id == track_id:
                    track.block(blocked)
                    track.info = replace(track.info, muted=blocked)
                    self.track_muted(publisher, track.info)
                    publisher.emit(TrackMuted(publisher.participant_id, track_id, blocked))
                    for participant in self.participants.values():
                        participant.connection.choose_layers(time.monotonic())  # video
                    self.log.info("track muted by the operator", track=track_id, muted=blocked)
                    return track.info
        raise UnknownTrack(f"no participant in room {self.room_id!r} publishes {track_id!r}")

    async def replace_identity(self, identity: str) -> None:
        """One identity is one participant: a session already in the room with it (another tab,
        a reconnect the old session has not noticed yet) leaves for the one joining."""
        for participant in list(self.participants.values()):
            if participant.identity == identity:
                await self.end_session(participant, DUPLICATE_IDENTITY)

    def tracks_for(self, participant: Participant) -> list[TrackReceiver]:
        """Every track the others publish (``participant`` receives those it subscribes to)."""
        return [
            track
            for other in self.participants.values()
            if other is not participant
            for track in other.published.values()
        ]

    def others_tracks(self, participant: Participant) -> dict[str, TrackReceiver]:
        """What ``participant`` may subscribe to, by track id."""
        return {t.info.track_id: t for t in self.tracks_for(participant)}

    def publish(self, publisher: Participant, track: TrackReceiver) -> None:
        self.broadcast(TrackPublished(track.info), exclude=publisher)
        for participant in self.participants.values():
            if participant is not publisher and participant.wants(track):
                participant.subscriptions_changed()

    def unpublish(self, publisher: Participant, track: TrackReceiver) -> None:
        self.broadcast(
            TrackUnpublished(publisher.participant_id, track.info.track_id), exclude=publisher
        )
        for participant in self.participants.values():
            if participant is not publisher:
                participant.forget_track(track.info.track_id)
                participant.subscriptions_changed()

    def track_muted(self, publisher: Participant, track: TrackInfo) -> None:
        event = TrackMuted(publisher.participant_id, track.track_id, track.muted)
        self.broadcast(event, exclude=publisher)

    def broadcast(self, event: Event, exclude: Participant | None = None) -> None:
        for participant in list(self.participants.values()):
            if participant is not exclude:
                participant.emit(event)

    def track_count(self) -> int:
        return sum(len(p.published) for p in self.participants.values())
