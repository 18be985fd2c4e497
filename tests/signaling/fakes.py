"""A scripted room service for signaling tests: what the real one cannot be made to do on
demand (fail, raise an event at a chosen moment, close a session)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from sfu.api import (
    FULL_GRANTS,
    Answer,
    EventListener,
    Grants,
    InvalidSdp,
    ParticipantDetails,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantSession,
    PublishedTrack,
    RoomFull,
    RoomSummary,
    ServerOffer,
    SessionClosed,
    TrackInfo,
    TrackSettings,
    UnknownRoom,
    UnknownTrack,
)


class FakeParticipant:
    """Scripted by the sdp it gets: "boom" raises, "bad" is invalid, anything else is answered."""

    def __init__(self, participant_id: str, listener: EventListener) -> None:
        self._participant_id = participant_id
        self.listener = listener
        self.calls: list[str] = []
        self.leave_calls = 0
        self.leave_reasons: list[str] = []
        self.left = asyncio.Event()

    @property
    def participant_id(self) -> str:
        return self._participant_id

    async def offer(self, sdp: str, sources: Mapping[str, str]) -> Answer:
        self.calls.append(f"offer {sdp} {dict(sources)}")
        if sdp == "boom":
            raise RuntimeError("scripted failure")
        if sdp == "bad":
            raise InvalidSdp("scripted invalid sdp")
        await asyncio.sleep(0.01)
        # a server offer raised while the client offer is handled (the one glare abandons)
        self.listener(ServerOffer("server-sdp"))
        return Answer("answer-sdp", (PublishedTrack("0", "t1", "audio"),))

    async def answer(self, sdp: str) -> None:
        self.calls.append(f"answer {sdp}")

    async def add_ice_candidate(
        self, candidate: str | None, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        self.calls.append(f"candidate {candidate} {sdp_mid} {sdp_mline_index}")

    async def set_muted(self, track_id: str, muted: bool) -> None:
        raise UnknownTrack(f"no track {track_id}")

    async def subscribe(self, track_ids: Sequence[str], subscribed: bool) -> None:
        self.calls.append(f"subscribe {list(track_ids)} {subscribed}")

    async def set_track_settings(self, track_ids: Sequence[str], settings: TrackSettings) -> None:
        if "t9" in track_ids:
            raise UnknownTrack("no other participant in the room publishes 't9'")
        self.calls.append(f"settings {list(track_ids)} {settings}")

    async def leave(self, reason: str = "left") -> None:
        self.leave_calls += 1
        self.leave_reasons.append(reason)
        self.left.set()


class FakeService:
    def __init__(self) -> None:
        self.participants: list[FakeParticipant] = []
        #: (room, name, identity, grants) of each join
        self.joins: list[tuple[str, str, str | None, Grants]] = []

    async def rooms(self) -> tuple[RoomSummary, ...]:
        return ()

    async def room_participants(self, room_id: str) -> tuple[ParticipantDetails, ...]:
        raise UnknownRoom(f"there is no room {room_id!r}")

    async def remove_participant(self, room_id: str, participant_id: str) -> None:
        raise UnknownRoom(f"there is no room {room_id!r}")

    async def mute_track(self, room_id: str, track_id: str, muted: bool) -> TrackInfo:
        raise UnknownRoom(f"there is no room {room_id!r}")

    async def close_room(self, room_id: str) -> None:
        raise UnknownRoom(f"there is no room {room_id!r}")

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
        self.joins.append((room_id, name, identity, grants))
        if room_id == "full":
            raise RoomFull("scripted full room")
        participant = FakeParticipant(f"p{len(self.participants) + 1}", listener)
        self.participants.append(participant)
        # an event raised during join must reach the client after "joined"
        listener(ParticipantJoined(ParticipantInfo("early", "Early")))
        return participant, ()

    async def stats(self) -> Mapping[str, int]:
        return {"rooms": 1, "participants": len(self.participants), "tracks": 0}

    async def close(self, reason: str = "server-shutdown") -> None:
        for participant in self.participants:
            participant.listener(SessionClosed(reason))
