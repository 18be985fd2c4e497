"""The signaling wire format (docs/protocol.md): client messages in, server messages out.

Pure: no I/O. :func:`parse_client_message` turns one WebSocket text frame into a validated
:data:`ClientMessage` or raises :class:`ProtocolError`; the ``*_message`` functions build the JSON
objects the server sends.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from sfu.api import (
    Answer,
    ConnectionQualityReport,
    Event,
    OfferedTrack,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    PublisherLayers,
    ServerOffer,
    SessionClosed,
    StreamState,
    TrackInfo,
    TrackMuted,
    TrackPublished,
    TrackSettings,
    TrackUnpublished,
)

PROTOCOL_VERSION = 1

MAX_ID_LENGTH = 64
MAX_CANDIDATE_LENGTH = 1024
MAX_TRACKS_PER_OFFER = 64
#: Track ids in one subscribe/unsubscribe: every track of a full room (100 x 4) fits.
MAX_TRACKS_PER_SUBSCRIBE = 512
#: Bounds of setTrackSettings: a layer number above the highest layer means the highest; sizes
#: are in pixels (16384 is the largest frame VP8, VP9 and H.264 level 6.2 can carry); temporal
#: layers 0-3 are what VP8/VP9 scalability modes define (L1T1..L1T3, RFC 7741 TID is 0-3).
MAX_LAYER = 255
MAX_DIMENSION = 16384
MAX_TEMPORAL_LAYER = 3
#: How many validation problems one error message lists.
MAX_REPORTED_ERRORS = 3
#: A resume token's length as a client may send it (the server's are 43 characters).
MAX_TOKEN_LENGTH = 128
MAX_ACCESS_TOKEN_LENGTH = 4096

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ResumeGrant:
    """What a client needs to resume its session: the token and how long it is good for."""

    token: str
    window: float


class ProtocolError(Exception):
    """A client message the server cannot act on; becomes an ``error`` reply with this ``code``."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must contain only printable characters")
    return value


#: Never in a name: controls (tab, newline, NUL, C1), surrogates, line and paragraph separators.
_NAME_REJECTED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
#: Format characters (Cf) whose effect lasts until a terminator that may never come, so that they
#: can reorder or restyle the text around a name: bidi embeddings and overrides U+202A-U+202E and
#: isolates U+2066-U+2069 (UAX #9; "Trojan Source", CVE-2021-42574), the deprecated shaping and
#: swapping controls U+206A-U+206F, interlinear annotation U+FFF9-U+FFFB. The other format
#: characters (ZWNJ, ZWJ, soft hyphen, emoji tag characters, LRM/RLM/ALM marks) act only where
#: they stand and are needed to write some names at all.
_NAME_REJECTED_FORMAT = frozenset(
    (*range(0x202A, 0x202F), *range(0x2066, 0x2070), 0xFFF9, 0xFFFA, 0xFFFB)
)
#: A name made only of these would be invisible.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Zs", "Mn", "Me"})


def _display_name(value: str) -> str:
    """Any text a person may go by (UAX #31 does not apply: names are shown, not parsed).

    Unassigned code points are allowed (emoji newer than this Python's Unicode tables), the 66
    noncharacters are not. Length is checked elsewhere, in code points.
    """
    for position, char in enumerate(value, 1):
        point = ord(char)
        if (
            unicodedata.category(char) in _NAME_REJECTED_CATEGORIES
            or point in _NAME_REJECTED_FORMAT
            or 0xFDD0 <= point <= 0xFDEF
            or point & 0xFFFE == 0xFFFE
        ):
            described = f"U+{point:04X} {unicodedata.name(char, '')}".rstrip()
            raise ValueError(
                f"{described} at position {position} is not allowed: no control characters, "
                "line breaks, or bidirectional embeddings, overrides and isolates"
            )
    if all(unicodedata.category(char) in _INVISIBLE_CATEGORIES for char in value):
        raise ValueError("must contain a visible character")
    return value


RoomId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[A-Za-z0-9_.-]+$")
]
# max_length counts code points: a family emoji (four people joined by ZWJ) counts 7
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_display_name)
]
Label = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_printable)
]
RequestId = Annotated[str, StringConstraints(max_length=MAX_ID_LENGTH)]
# bounded by the message size here; the room checks it against what the connection allows
Sdp = Annotated[str, StringConstraints(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _ClientMessage(_Model):
    request_id: RequestId | None = Field(default=None, alias="requestId")


class TrackOptions(_Model):
    """What a publisher says about one of its sending m-lines."""

    source: Label = "unknown"


AccessToken = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ACCESS_TOKEN_LENGTH)]


class Join(_ClientMessage):
    type: Literal["join"]
    v: int
    room: RoomId
    name: Name
    auto_subscribe: bool = Field(default=True, alias="autoSubscribe")
    #: the access token (signaling/tokens.py); required when the server has keys
    token: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_ACCESS_TOKEN_LENGTH)] | None
    ) = None


class Resume(_ClientMessage):
    """Take over a joined session whose WebSocket dropped (signaling/resume.py)."""

    type: Literal["resume"]
    v: int
    token: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TOKEN_LENGTH)]
    last_seq: Annotated[int, Field(ge=0)] = Field(alias="lastSeq")


class Offer(_ClientMessage):
    type: Literal["offer"]
    sdp: Sdp
    tracks: Annotated[dict[Label, TrackOptions], Field(max_length=MAX_TRACKS_PER_OFFER)] = {}

    def sources(self) -> dict[str, str]:
        return {mid: options.source for mid, options in self.tracks.items()}


class AnswerMessage(_ClientMessage):
    type: Literal["answer"]
    sdp: Sdp


class Candidate(_ClientMessage):
    type: Literal["candidate"]
    candidate: Annotated[str, StringConstraints(max_length=MAX_CANDIDATE_LENGTH)] | None
    sdp_mid: Label | None = Field(default=None, alias="sdpMid")
    sdp_mline_index: Annotated[int, Field(ge=0, le=1023)] | None = Field(
        default=None, alias="sdpMLineIndex"
    )

    @model_validator(mode="after")
    def _needs_an_m_line(self) -> Candidate:
        if self.candidate and self.sdp_mid is None and self.sdp_mline_index is None:
            raise ValueError("sdpMid or sdpMLineIndex is required with a candidate")
        return self


class Mute(_ClientMessage):
    type: Literal["mute"]
    track_id: Label = Field(alias="trackId")
    muted: bool


class Leave(_ClientMessage):
    type: Literal["leave"]


TrackIds = Annotated[list[Label], Field(min_length=1, max_length=MAX_TRACKS_PER_SUBSCRIBE)]


class Subscribe(_ClientMessage):
    type: Literal["subscribe"]
    track_ids: TrackIds = Field(alias="trackIds")


class Unsubscribe(_ClientMessage):
    type: Literal["unsubscribe"]
    track_ids: TrackIds = Field(alias="trackIds")


Dimension = Annotated[int, Field(ge=1, le=MAX_DIMENSION)]


class SetTrackSettings(_ClientMessage):
    """What a subscriber wants of some tracks it receives; replaces their previous settings."""

    type: Literal["setTrackSettings"]
    track_ids: TrackIds = Field(alias="trackIds")
    paused: bool = False
    max_layer: Annotated[int, Field(ge=0, le=MAX_LAYER)] | None = Field(
        default=None, alias="maxLayer"
    )
    max_width: Dimension | None = Field(default=None, alias="maxWidth")
    max_height: Dimension | None = Field(default=None, alias="maxHeight")
    max_temporal_layer: Annotated[int, Field(ge=0, le=MAX_TEMPORAL_LAYER)] | None = Field(
        default=None, alias="maxTemporalLayer"
    )

    def settings(self) -> TrackSettings:
        return TrackSettings(
            paused=self.paused,
            max_layer=self.max_layer,
            max_width=self.max_width,
            max_height=self.max_height,
            max_temporal_layer=self.max_temporal_layer,
        )


ClientMessage = Annotated[
    Join
    | Resume
    | Offer
    | AnswerMessage
    | Candidate
    | Mute
    | Leave
    | Subscribe
    | Unsubscribe
    | SetTrackSettings,
    Field(discriminator="type"),
]
CLIENT_MESSAGE_TYPES = (
    "join",
    "resume",
    "offer",
    "answer",
    "candidate",
    "mute",
    "leave",
    "subscribe",
    "unsubscribe",
    "setTrackSettings",
)

_client_message: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def parse_client_message(text: str) -> ClientMessage:
    """Parse and validate one text frame; raise :class:`ProtocolError` on any problem."""
    try:
        data = pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        raise ProtocolError("bad-json", f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid-message", "a message must be a JSON object")
    request_id = _request_id(data)
    _check_type(data, request_id)
    _check_version(data, request_id)
    try:
        return _client_message.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError("invalid-message", _describe(exc), request_id) from None


def _request_id(data: Mapping[str, Any]) -> str | None:
    """The request id to echo on an error, if the message carries a usable one."""
    value = data.get("requestId")
    if isinstance(value, str) and len(value) <= MAX_ID_LENGTH:
        return value
    return None


def _check_type(data: Mapping[str, Any], request_id: str | None) -> None:
    kind = data.get("type")
    if kind is None:
        raise ProtocolError("invalid-message", "type: field required", request_id)
    if not isinstance(kind, str):
        raise ProtocolError("invalid-message", "type: must be a string", request_id)
    if kind not in CLIENT_MESSAGE_TYPES:
        shown = kind if len(kind) <= MAX_ID_LENGTH else kind[:MAX_ID_LENGTH] + "..."
        raise ProtocolError(
            "invalid-message",
            f"type: unknown message type {shown!r}; expected one of "
            + ", ".join(CLIENT_MESSAGE_TYPES),
            request_id,
        )


def _check_version(data: Mapping[str, Any], request_id: str | None) -> None:
    # checked before the rest of a join (or resume) so that a later version's shape gets this
    version = data.get("v")
    if data["type"] not in ("join", "resume") or isinstance(version, bool):
        return
    if not isinstance(version, int):
        return
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            "unsupported-version",
            f"protocol version {version} is not supported; this server speaks version "
            f"{PROTOCOL_VERSION}",
            request_id,
        )


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False)[:MAX_REPORTED_ERRORS]:
        # the first location element is the union tag ("join"); the rest is the field path
        path = ".".join(str(part) for part in error["loc"][1:])
        if error["type"] == "value_error":
            why = str(error["ctx"]["error"])
        else:
            why = error["msg"][:1].lower() + error["msg"][1:]
        problems.append(f"{path}: {why}" if path else why)
    if exc.error_count() > MAX_REPORTED_ERRORS:
        problems.append(f"and {exc.error_count() - MAX_REPORTED_ERRORS} more")
    return "; ".join(problems)


# --- server -> client ---


def _with_request_id(message: JsonObject, request_id: str | None) -> JsonObject:
    if request_id is not None:
        message["requestId"] = request_id
    return message


def track_json(track: TrackInfo) -> JsonObject:
    return {
        "trackId": track.track_id,
        "participantId": track.participant_id,
        "kind": track.kind,
        "source": track.source,
        "muted": track.muted,
    }


def participant_json(participant: ParticipantInfo) -> JsonObject:
    return {
        "participantId": participant.participant_id,
        "name": participant.name,
        "tracks": [track_json(track) for track in participant.tracks],
    }


def offered_track_json(track: OfferedTrack) -> JsonObject:
    return {"participantId": track.participant_id, "trackId": track.track_id, "kind": track.kind}


def joined_message(
    room: str,
    participant_id: str,
    participants: tuple[ParticipantInfo, ...],
    request_id: str | None = None,
    resume: ResumeGrant | None = None,
    ice_servers: Sequence[JsonObject] = (),
) -> JsonObject:
    message: JsonObject = {
        "type": "joined",
        "v": PROTOCOL_VERSION,
        "room": room,
        "participantId": participant_id,
        "participants": [participant_json(p) for p in participants],
        **resume_json(resume),
        **ice_servers_json(ice_servers),
    }
    return _with_request_id(message, request_id)


def resumed_message(
    room: str,
    participant_id: str,
    resume: ResumeGrant | None,
    received: int,
    replayed: int,
    request_id: str | None = None,
    ice_servers: Sequence[JsonObject] = (),
) -> JsonObject:
    message: JsonObject = {
        "type": "resumed",
        "v": PROTOCOL_VERSION,
        "room": room,
        "participantId": participant_id,
        "received": received,
        "replayed": replayed,
        **resume_json(resume),
        **ice_servers_json(ice_servers),
    }
    return _with_request_id(message, request_id)


def resume_json(resume: ResumeGrant | None) -> JsonObject:
    if resume is None:
        return {}
    return {"resumeToken": resume.token, "resumeWindow": resume.window}


def ice_servers_json(ice_servers: Sequence[JsonObject]) -> JsonObject:
    """``iceServers`` (signaling/turn.py) when the server has TURN servers; else no field."""
    return {"iceServers": list(ice_servers)} if ice_servers else {}


def answer_message(answer: Answer, request_id: str | None = None) -> JsonObject:
    message: JsonObject = {
        "type": "answer",
        "sdp": answer.sdp,
        "tracks": [
            {"mid": track.mid, "trackId": track.track_id, "kind": track.kind}
            for track in answer.published
        ],
    }
    return _with_request_id(message, request_id)


def left_message(request_id: str | None = None) -> JsonObject:
    return _with_request_id({"type": "left"}, request_id)


def bye_message(reason: str) -> JsonObject:
    return {"type": "bye", "reason": reason}


def error_message(code: str, message: str, request_id: str | None = None) -> JsonObject:
    return _with_request_id({"type": "error", "code": code, "message": message}, request_id)


def event_message(event: Event) -> JsonObject:
    """The server message for one room event (:class:`SessionClosed` becomes ``bye``)."""
    match event:
        case ParticipantJoined(participant=participant):
            return {"type": "participant-joined", "participant": participant_json(participant)}
        case ParticipantLeft(participant_id=participant_id, reason=reason):
            return {"type": "participant-left", "participantId": participant_id, "reason": reason}
        case TrackPublished(track=track):
            return {"type": "track-published", "track": track_json(track)}
        case TrackUnpublished(participant_id=participant_id, track_id=track_id):
            return {
                "type": "track-unpublished",
                "participantId": participant_id,
                "trackId": track_id,
            }
        case TrackMuted(participant_id=participant_id, track_id=track_id, muted=muted):
            return {
                "type": "track-muted",
                "participantId": participant_id,
                "trackId": track_id,
                "muted": muted,
            }
        case PublisherLayers(track_id=track_id, layers=layers):
            return {
                "type": "publisherLayers",
                "trackId": track_id,
                "layers": [{"rid": layer.rid, "active": layer.active} for layer in layers],
            }
        case StreamState(track_id=track_id, active=active, reason=reason):
            state = "active" if active else "paused"
            return {"type": "streamState", "trackId": track_id, "state": state, "reason": reason}
        case ConnectionQualityReport() as report:
            return {
                "type": "connectionQuality",
                "quality": report.quality,
                "rttMs": None if report.rtt is None else round(report.rtt * 1000),
                "lossPercent": round(report.loss * 100, 1),
                "estimateBps": None if report.estimate is None else round(report.estimate),
                "allocatedBps": round(report.allocated),
                "probing": report.probing,
            }
        case ServerOffer(sdp=sdp, tracks=tracks):
            return {
                "type": "offer",
                "sdp": sdp,
                "tracks": {mid: offered_track_json(track) for mid, track in tracks.items()},
            }
        case SessionClosed(reason=reason):
            return bye_message(reason)
    raise TypeError(f"not a room event: {event!r}")
