"""The room service as the control plane sees it.

Everything that crosses this boundary is a plain, immutable value (strings, numbers, tuples of
dataclasses), so the same interface can later sit across a process boundary: a worker process per
core, or another node reached through Redis. The media plane owns a room's state; callers hold a
:class:`ParticipantSession` handle and receive :data:`Event` values through a listener.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Kind = Literal["audio", "video"]

#: Where a published track comes from, as its publisher labels it. Free-form beyond these.
KNOWN_SOURCES = ("microphone", "camera", "screen", "screen-audio", "unknown")


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """A published track as other participants see it."""

    track_id: str
    participant_id: str
    kind: Kind
    source: str = "unknown"
    muted: bool = False


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    participant_id: str
    name: str
    tracks: tuple[TrackInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class RoomSummary:
    """A room as the operator API lists it."""

    room_id: str
    participants: int
    tracks: int


@dataclass(frozen=True, slots=True)
class ParticipantDetails:
    """A participant as the operator API shows it: beyond what the others see, who it is and
    whether its media connection is up."""

    participant_id: str
    name: str
    identity: str | None
    connected: bool
    tracks: tuple[TrackInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class PublishedTrack:
    """The answer to a client offer tells the publisher the id given to each sending m-line."""

    mid: str
    track_id: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class OfferedTrack:
    """What a server offer carries on one m-line of the subscriber's connection."""

    participant_id: str
    track_id: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class Answer:
    sdp: str
    published: tuple[PublishedTrack, ...] = ()


# --- events the room sends to one participant ---


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    participant: ParticipantInfo


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    participant_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class TrackPublished:
    track: TrackInfo


@dataclass(frozen=True, slots=True)
class TrackUnpublished:
    participant_id: str
    track_id: str


@dataclass(frozen=True, slots=True)
class TrackMuted:
    participant_id: str
    track_id: str
    muted: bool


@dataclass(frozen=True, slots=True)
class ServerOffer:
    """The server renegotiates: the client answers with :meth:`ParticipantSession.answer`.

    ``tracks`` maps each sending m-line (by mid) of this offer to the remote track it carries;
    m-lines absent from it carry nothing (inactive).
    """

    sdp: str
    tracks: Mapping[str, OfferedTrack] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LayerActivity:
    """Whether the server wants a publisher to send one simulcast layer (by its rid)."""

    rid: str
    active: bool


@dataclass(frozen=True, slots=True)
class PublisherLayers:
    """To a publisher: which simulcast layers of its track somebody receives.

    A layer nobody receives costs the publisher's uplink for nothing: its client should stop
    encoding it (``active: false``), and start again when it becomes wanted.
    """

    track_id: str
    layers: tuple[LayerActivity, ...]


@dataclass(frozen=True, slots=True)
class StreamState:
    """To a subscriber: a video track it receives was paused because not even its lowest layer
    fits its downlink (``active`` False), or resumed (True)."""

    track_id: str
    active: bool
    reason: str = "bandwidth"


@dataclass(frozen=True, slots=True)
class ConnectionQualityReport:
    """To a subscriber, every few seconds: how its downlink does (rates in bit/s)."""

    quality: Literal["excellent", "good", "poor"]
    rtt: float | None  # seconds
    loss: float  # fraction
    estimate: float | None  # None: the client gives the server no estimate
    allocated: float
    probing: bool


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The server ended this participant's session (ICE failure, timeout, shutdown)."""

    reason: str


Event = (
    ParticipantJoined
    | ParticipantLeft
    | TrackPublished
    | TrackUnpublished
    | TrackMuted
    | ServerOffer
    | PublisherLayers
    | StreamState
    | ConnectionQualityReport
    | SessionClosed
)
#: Called on the event loop, in the order events happen, never during the call that joins.
#: A ServerOffer emitted while the client's own offer() is in progress is one the server has
#: abandoned (glare): deliver it in order anyway — the client must see it before the answer.
EventListener = Callable[[Event], None]


@dataclass(frozen=True, slots=True)
class Grants:
    """What a participant may do in its room (from its access token; everything without one)."""

    publish: bool = True
    subscribe: bool = True
    #: the track sources it may publish ("camera", "microphone", "screen", ...); None: any
    sources: tuple[str, ...] | None = None
    #: may manage the room through the operator API
    admin: bool = False


#: what a participant without an access token may do (a server without keys): all but admin
FULL_GRANTS = Grants()


@dataclass(frozen=True, slots=True)
class TrackSettings:
    """What a subscriber wants of one video track it receives; the defaults ask for the best.

    Layers are numbered from 0, the smallest, by their measured resolution (then bitrate), not
    by rid. ``max_width``/``max_height`` pick the smallest layer at least that large (a tile of
    that size), or the largest below it. Temporal layers (VP8) likewise, 0 the base.
    ``paused``: forward nothing of this track until resumed.
    """

    paused: bool = False
    max_layer: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    max_temporal_layer: int | None = None


# --- errors ---


class SfuError(Exception):
    """An error a client caused; ``code`` is stable and documented in docs/protocol.md."""

    code = "internal-error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSdp(SfuError):
    code = "invalid-sdp"


class InvalidState(SfuError):
    code = "invalid-state"


class UnknownTrack(SfuError):
    code = "unknown-track"


class RoomFull(SfuError):
    code = "room-full"


class TooManyRooms(SfuError):
    code = "too-many-rooms"


class UnknownRoom(SfuError):
    code = "unknown-room"


class UnknownParticipant(SfuError):
    code = "unknown-participant"


class ServerDraining(SfuError):
    """A join that would open a room on a server that is stopping (it drains: signaling)."""

    code = "server-draining"


class NotAllowed(SfuError):
    """What the participant's grants do not allow (publishing, a source, subscribing)."""

    code = "not-allowed"


# --- the interface ---


class ParticipantSession(Protocol):
    """One participant's handle on its room. Calls for one session must not overlap."""

    @property
    def participant_id(self) -> str: ...

    async def offer(self, sdp: str, sources: Mapping[str, str]) -> Answer:
        """Apply a client offer (``sources``: mid -> source label) and return the answer.

        The server takes the polite role of perfect negotiation: if its own offer is outstanding,
        it abandons it, answers this one, and offers again afterwards.
        """
        ...

    async def answer(self, sdp: str) -> None:
        """Apply the client's answer to the latest :class:`ServerOffer`."""
        ...

    async def add_ice_candidate(
        self, candidate: str | None, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        """Add a trickled remote candidate; ``None`` or ``""`` means end of candidates."""
        ...

    async def set_muted(self, track_id: str, muted: bool) -> None: ...

    async def subscribe(self, track_ids: Sequence[str], subscribed: bool) -> None:
        """Subscribe to (or, ``subscribed=False``, unsubscribe from) others' tracks.

        All-or-nothing: :class:`UnknownTrack` when any id is not another participant's track in
        the room. A change is delivered by the next :class:`ServerOffer`.
        """
        ...

    async def set_track_settings(self, track_ids: Sequence[str], settings: TrackSettings) -> None:
        """Replace what this subscriber wants of these tracks (all-or-nothing, as subscribe).

        Settings of a track not (yet) received are kept for when it is; :class:`UnknownTrack`
        when any id is not another participant's track in the room.
        """
        ...

    async def leave(self, reason: str = "left") -> None:
        """Leave the room (others see ``reason``: "left", "disconnected", ...); idempotent."""
        ...


class RoomService(Protocol):
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
        """Join (creating the room if needed); returns the session and the others already in it.

        ``auto_subscribe``: receive every track the others publish, now and later, except those
        unsubscribed from; else only those subscribed to. ``identity``: who the participant is
        beyond this session; one already in the room with it is replaced (its listener gets
        :class:`SessionClosed` ``duplicate-identity``). ``grants``: what it may do.
        """
        ...

    async def stats(self) -> Mapping[str, int]:
        """Counters for health checks: rooms, participants, tracks.

        This and the other queries are coroutines, as everything here: a room service in
        another process or on another node answers over its link (issue 13)."""
        ...

    # --- the operator's (docs/operations.md, operator API) ---

    async def rooms(self) -> tuple[RoomSummary, ...]: ...

    async def room_participants(self, room_id: str) -> tuple[ParticipantDetails, ...]:
        """Who is in the room; :class:`UnknownRoom` if there is no such room."""
        ...

    async def remove_participant(self, room_id: str, participant_id: str) -> None:
        """End a participant's session (``bye`` ``removed``); :class:`UnknownRoom`,
        :class:`UnknownParticipant`."""
        ...

    async def mute_track(self, room_id: str, track_id: str, muted: bool) -> TrackInfo:
        """Forward a published track to no one (or again), whatever its publisher sends; the
        room and the publisher are told (``track-muted``). :class:`UnknownTrack`."""
        ...

    async def close_room(self, room_id: str) -> None:
        """End every session in the room (``bye`` ``room-closed``); :class:`UnknownRoom`."""
        ...

    async def close(self, reason: str = "server-shutdown") -> None:
        """Close every session (each listener gets :class:`SessionClosed`) and every room."""
        ...
