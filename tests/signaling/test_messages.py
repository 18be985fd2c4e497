from __future__ import annotations

import json
from typing import Any

import pytest

from sfu.api import (
    Answer,
    ConnectionQualityReport,
    Event,
    LayerActivity,
    OfferedTrack,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    PublishedTrack,
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
from signaling.messages import (
    AnswerMessage,
    Candidate,
    Join,
    Leave,
    Mute,
    Offer,
    ProtocolError,
    SetTrackSettings,
    Subscribe,
    TrackOptions,
    Unsubscribe,
    answer_message,
    bye_message,
    error_message,
    event_message,
    joined_message,
    left_message,
    parse_client_message,
)

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def text(**fields: Any) -> str:
    return json.dumps(fields)


VALID = [
    (
        text(type="join", v=1, room="room-1", name="Ann"),
        Join(type="join", v=1, room="room-1", name="Ann"),
    ),
    (
        text(type="join", v=1, room="A.b_c-9", name="Zoë 🙂", requestId="r1", extra=[1, 2]),
        Join(type="join", v=1, room="A.b_c-9", name="Zoë 🙂", requestId="r1"),
    ),
    (text(type="join", v=1, room="r" * 64, name="n" * 64), None),
    (text(type="offer", sdp=SDP), Offer(type="offer", sdp=SDP)),
    (
        text(type="offer", sdp=SDP, tracks={"0": {"source": "camera"}, "1": {}}),
        Offer(
            type="offer",
            sdp=SDP,
            tracks={"0": TrackOptions(source="camera"), "1": TrackOptions(source="unknown")},
        ),
    ),
    # its size is checked against what the participant's connection allows, not here
    (text(type="offer", sdp="x" * 1_000_000), None),
    (
        text(type="join", v=1, room="r", name="n", autoSubscribe=False),
        Join(type="join", v=1, room="r", name="n", autoSubscribe=False),
    ),
    (
        text(type="subscribe", trackIds=["t1", "t2"]),
        Subscribe(type="subscribe", trackIds=["t1", "t2"]),
    ),
    (
        text(type="unsubscribe", trackIds=["t1"] * 512),
        Unsubscribe(type="unsubscribe", trackIds=["t1"] * 512),
    ),
    (
        text(type="answer", sdp=SDP, requestId=""),
        AnswerMessage(type="answer", sdp=SDP, requestId=""),
    ),
    (
        text(type="candidate", candidate="candidate:1 1 udp 1 1.2.3.4 5 typ host", sdpMid="0"),
        Candidate(type="candidate", candidate="candidate:1 1 udp 1 1.2.3.4 5 typ host", sdpMid="0"),
    ),
    (
        text(type="candidate", candidate="candidate:x", sdpMLineIndex=0),
        Candidate(type="candidate", candidate="candidate:x", sdpMLineIndex=0),
    ),
    (text(type="candidate", candidate=None), Candidate(type="candidate", candidate=None)),
    (text(type="candidate", candidate=""), Candidate(type="candidate", candidate="")),
    (
        text(type="mute", trackId="t1", muted=True),
        Mute(type="mute", trackId="t1", muted=True),
    ),
    (text(type="leave", requestId="r" * 64), Leave(type="leave", requestId="r" * 64)),
    (
        text(type="setTrackSettings", trackIds=["t1"]),
        SetTrackSettings(type="setTrackSettings", trackIds=["t1"]),
    ),
    (
        text(
            type="setTrackSettings",
            trackIds=["t1"] * 512,
            paused=True,
            maxLayer=0,
            maxWidth=1,
            maxHeight=16384,
            maxTemporalLayer=3,
            requestId="s",
        ),
        SetTrackSettings(
            type="setTrackSettings",
            trackIds=["t1"] * 512,
            paused=True,
            maxLayer=0,
            maxWidth=1,
            maxHeight=16384,
            maxTemporalLayer=3,
            requestId="s",
        ),
    ),
    # null is "no limit", as leaving the field out
    (
        text(type="setTrackSettings", trackIds=["t1"], maxWidth=None, maxLayer=None),
        SetTrackSettings(type="setTrackSettings", trackIds=["t1"]),
    ),
]


@pytest.mark.parametrize(("raw", "expected"), VALID)
def test_valid(raw: str, expected: object) -> None:
    message = parse_client_message(raw)
    if expected is not None:
        assert message == expected


def test_track_settings() -> None:
    message = parse_client_message(
        text(type="setTrackSettings", trackIds=["t1"], maxWidth=640, maxHeight=360)
    )
    assert isinstance(message, SetTrackSettings)
    assert message.settings() == TrackSettings(max_width=640, max_height=360)
    message = parse_client_message(
        text(type="setTrackSettings", trackIds=["t1"], paused=True, maxLayer=2, maxTemporalLayer=0)
    )
    assert isinstance(message, SetTrackSettings)
    assert message.settings() == TrackSettings(paused=True, max_layer=2, max_temporal_layer=0)


def test_offer_sources() -> None:
    message = parse_client_message(text(type="offer", sdp=SDP, tracks={"0": {"source": "screen"}}))
    assert isinstance(message, Offer)
    assert message.sources() == {"0": "screen"}


INVALID = [
    # (raw, code, words expected in the message, request id echoed)
    ("", "bad-json", "JSON", None),
    ("{", "bad-json", "JSON", None),
    ("{'type': 'join'}", "bad-json", "JSON", None),
    ('{"type": "join", "v": NaN}', "bad-json", "JSON", None),
    ("[" * 10000, "bad-json", "JSON", None),
    ("[]", "invalid-message", "JSON object", None),
    ('"join"', "invalid-message", "JSON object", None),
    ("null", "invalid-message", "JSON object", None),
    (text(room="a"), "invalid-message", "type: field required", None),
    (text(type=1), "invalid-message", "type: must be a string", None),
    (text(type="hello", requestId="q"), "invalid-message", "unknown message type 'hello'", "q"),
    (text(type="Join", v=1, room="a", name="b"), "invalid-message", "unknown message type", None),
    (text(type="joined"), "invalid-message", "unknown message type", None),
    # join
    (text(type="join", room="a", name="b"), "invalid-message", "v: field required", None),
    (text(type="join", v="1", room="a", name="b"), "invalid-message", "v:", None),
    (text(type="join", v=True, room="a", name="b"), "invalid-message", "v:", None),
    (text(type="join", v=1.0, room="a", name="b"), "invalid-message", "v:", None),
    (
        text(type="join", v=1, name="b", requestId="j"),
        "invalid-message",
        "room: field required",
        "j",
    ),
    (text(type="join", v=1, room="", name="b"), "invalid-message", "room:", None),
    (text(type="join", v=1, room="a b", name="b"), "invalid-message", "room:", None),
    (text(type="join", v=1, room="a/b", name="b"), "invalid-message", "room:", None),
    (text(type="join", v=1, room="r" * 65, name="b"), "invalid-message", "room:", None),
    (text(type="join", v=1, room=7, name="b"), "invalid-message", "room:", None),
    (text(type="join", v=1, room="a"), "invalid-message", "name: field required", None),
    (text(type="join", v=1, room="a", name=""), "invalid-message", "name:", None),
    (text(type="join", v=1, room="a", name="n" * 65), "invalid-message", "name:", None),
    (text(type="join", v=1, room="a", name="a\nb"), "invalid-message", "name: U+000A at", None),
    (text(type="join", v=1, room="a", name="\x00"), "invalid-message", "name:", None),
    (text(type="join", v=1, room="a", name=None), "invalid-message", "name:", None),
    # version: any other integer is unsupported, checked before the other fields
    (text(type="join", v=2, room="a", name="b"), "unsupported-version", "version 2", None),
    (text(type="join", v=0, requestId="x"), "unsupported-version", "version 1", "x"),
    # request id
    (text(type="leave", requestId="r" * 65), "invalid-message", "requestId:", None),
    (text(type="leave", requestId=5), "invalid-message", "requestId:", None),
    # offer
    (text(type="offer"), "invalid-message", "sdp: field required", None),
    (text(type="offer", sdp=""), "invalid-message", "sdp:", None),
    (text(type="offer", sdp=None), "invalid-message", "sdp:", None),
    (text(type="subscribe"), "invalid-message", "trackIds: field required", None),
    (text(type="subscribe", trackIds=[]), "invalid-message", "trackIds:", None),
    (text(type="unsubscribe", trackIds="t1"), "invalid-message", "trackIds:", None),
    (text(type="unsubscribe", trackIds=[""]), "invalid-message", "trackIds.0:", None),
    (text(type="subscribe", trackIds=["t"] * 513), "invalid-message", "trackIds:", None),
    (text(type="join", v=1, room="a", name="b", autoSubscribe=0), "invalid-message", "auto", None),
    (text(type="offer", sdp=SDP, tracks=[]), "invalid-message", "tracks:", None),
    (text(type="offer", sdp=SDP, tracks={"0": "camera"}), "invalid-message", "tracks.0", None),
    (
        text(type="offer", sdp=SDP, tracks={"0": {"source": 3}}),
        "invalid-message",
        "tracks.0.source",
        None,
    ),
    (
        text(type="offer", sdp=SDP, tracks={str(i): {} for i in range(65)}),
        "invalid-message",
        "tracks:",
        None,
    ),
    # answer
    (text(type="answer"), "invalid-message", "sdp: field required", None),
    (text(type="answer", sdp=["v=0"]), "invalid-message", "sdp:", None),
    # candidate
    (text(type="candidate"), "invalid-message", "candidate: field required", None),
    (text(type="candidate", candidate=5), "invalid-message", "candidate:", None),
    (text(type="candidate", candidate="candidate:x"), "invalid-message", "sdpMid", None),
    (
        text(type="candidate", candidate="c" * 1025, sdpMid="0"),
        "invalid-message",
        "candidate:",
        None,
    ),
    (
        text(type="candidate", candidate="candidate:x", sdpMLineIndex=-1),
        "invalid-message",
        "sdpMLineIndex:",
        None,
    ),
    (
        text(type="candidate", candidate="candidate:x", sdpMLineIndex="0"),
        "invalid-message",
        "sdpMLineIndex:",
        None,
    ),
    (
        text(type="candidate", candidate="candidate:x", sdpMid=0),
        "invalid-message",
        "sdpMid:",
        None,
    ),
    # mute
    (text(type="mute", muted=True), "invalid-message", "trackId: field required", None),
    (text(type="mute", trackId="t"), "invalid-message", "muted: field required", None),
    (text(type="mute", trackId="t", muted=1), "invalid-message", "muted:", None),
    (text(type="mute", trackId="t", muted="true"), "invalid-message", "muted:", None),
    (text(type="mute", trackId="", muted=True), "invalid-message", "trackId:", None),
    # setTrackSettings
    (text(type="setTrackSettings"), "invalid-message", "trackIds: field required", None),
    (text(type="setTrackSettings", trackIds=[]), "invalid-message", "trackIds:", None),
    (text(type="setTrackSettings", trackIds="t1"), "invalid-message", "trackIds:", None),
    (text(type="setTrackSettings", trackIds=["t"] * 513), "invalid-message", "trackIds:", None),
    (text(type="setTrackSettings", trackIds=[7]), "invalid-message", "trackIds.0:", None),
    (text(type="setTrackSettings", trackIds=["t"], paused=1), "invalid-message", "paused:", None),
    (
        text(type="setTrackSettings", trackIds=["t"], paused="true"),
        "invalid-message",
        "paused:",
        None,
    ),
    (
        text(type="setTrackSettings", trackIds=["t"], maxLayer=-1, requestId="q"),
        "invalid-message",
        "maxLayer: input should be greater than or equal to 0",
        "q",
    ),
    (
        text(type="setTrackSettings", trackIds=["t"], maxLayer=True),
        "invalid-message",
        "maxLayer: input should be a valid integer",
        None,
    ),
    (
        text(type="setTrackSettings", trackIds=["t"], maxLayer=256),
        "invalid-message",
        "maxLayer:",
        None,
    ),
    (
        text(type="setTrackSettings", trackIds=["t"], maxWidth=0),
        "invalid-message",
        "maxWidth: input should be greater than or equal to 1",
        None,
    ),
    (
        text(type="setTrackSettings", trackIds=["t"], maxHeight=-360),
        "invalid-message",
        "maxHeight: input should be greater than or equal to 1",
        None,
    ),
    (
        text(type="setTrackSettings", trackIds=["t"], maxWidth=16385),
        "invalid-message",
        "maxWidth: input should be less than or equal to 16384",
        None,
    ),
    (
        text(type="setTrackSettings", trackIds=["t"], maxWidth=640.5),
        "invalid-message",
        "maxWidth: input should be a valid integer",
        None,
    ),
    (
        text(type="setTrackSettings", trackIds=["t"], maxHeight="360"),
        "invalid-message",
        "maxHeight: input should be a valid integer",
        None,
    ),
    (
        text(type="setTrackSettings", trackIds=["t"], maxTemporalLayer=4),
        "invalid-message",
        "maxTemporalLayer: input should be less than or equal to 3",
        None,
    ),
    (
        text(type="setTrackSettings", trackIds=["t"], maxWidth=10**30),
        "invalid-message",
        "maxWidth:",
        None,
    ),
]


@pytest.mark.parametrize(("raw", "code", "words", "request_id"), INVALID)
def test_invalid(raw: str, code: str, words: str, request_id: str | None) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(raw)
    assert caught.value.code == code
    assert words in caught.value.message
    assert caught.value.request_id == request_id


# display names: (what it is, the name); docs/protocol.md section 2
NAMES = [
    ("Persian with ZWNJ (U+200C)", "\u0639\u0644\u06cc\u200c\u0631\u0636\u0627"),  # Ali-Reza
    ("Persian sentence with ZWNJ", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"),
    (
        "family emoji, ZWJ sequence (U+200D)",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    ),
    ("woman technologist, skin tone", "Ann \U0001f469\U0001f3fd\u200d\U0001f4bb"),
    ("flag, regional indicators", "Shirin \U0001f1ee\U0001f1f7"),
    (
        "subdivision flag, tag characters",
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    ),
    ("soft hyphen (U+00AD)", "Donau\u00addampf\u00adschiff"),
    ("variation selector-16", "\u2764\ufe0f Zo\u00eb"),
    ("Hebrew and digits with RLM (U+200F)", "\u05d3\u05e0\u05d4\u200f 2"),
    ("Arabic letter mark (U+061C)", "\u0645\u0631\u064a\u0645\u061c 3"),
    ("Japanese with ideographic space", "\u5c71\u7530\u3000\u592a\u90ce"),
    ("no-break space", "Jean\u00a0Dupont"),
    ("combining accent", "Zoe\u0308"),
    ("Thai with zero-width space", "\u0e2a\u0e21\u0e0a\u0e32\u0e22\u200b\u0e43\u0e08\u0e14\u0e35"),
    ("emoji newer than Unicode 14 (unassigned here)", "\U0001fae8"),
    (
        "64 code points of ZWJ emoji",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466" * 9 + "x",
    ),
]

REJECTED_NAMES = [
    # (what it is, the name, words in the message)
    ("right-to-left override", "Ann\u202egnp.exe", "U+202E RIGHT-TO-LEFT OVERRIDE at position 4"),
    ("left-to-right embedding", "\u202aAnn", "U+202A"),
    ("pop directional formatting", "Ann\u202c", "U+202C"),
    ("right-to-left isolate", "\u2067Ann\u2069", "U+2067"),
    ("pop directional isolate", "Ann\u2069", "U+2069"),
    ("deprecated shaping control", "Ann\u206d", "U+206D"),
    ("interlinear annotation", "\ufff9Ann\ufffb", "U+FFF9"),
    ("NUL", "Ann\x00", "U+0000 at position 4"),
    ("newline", "Ann\nBob", "U+000A"),
    ("tab", "Ann\tBob", "U+0009"),
    ("DEL", "Ann\x7f", "U+007F"),
    ("C1 next line", "Ann\x85", "U+0085"),
    ("line separator", "Ann\u2028Bob", "U+2028 LINE SEPARATOR"),
    ("paragraph separator", "Ann\u2029", "U+2029"),
    ("noncharacter", "Ann\ufdd0", "U+FDD0"),
    ("plane-end noncharacter", "Ann\U0001ffff", "U+1FFFF"),
    ("only a ZWJ", "\u200d", "visible character"),
    ("only spaces", "\u3000 ", "visible character"),
    (
        "65 code points",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466" * 9 + "xy",
        "at most 64",
    ),
]


@pytest.mark.parametrize(("what", "name"), NAMES, ids=[what for what, _ in NAMES])
def test_name_accepted(what: str, name: str) -> None:
    message = parse_client_message(text(type="join", v=1, room="r", name=name))
    assert isinstance(message, Join)
    assert message.name == name


@pytest.mark.parametrize(
    ("what", "name", "words"), REJECTED_NAMES, ids=[what for what, _, _ in REJECTED_NAMES]
)
def test_name_rejected(what: str, name: str, words: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(text(type="join", v=1, room="r", name=name, requestId="n"))
    assert (caught.value.code, caught.value.request_id) == ("invalid-message", "n")
    assert caught.value.message.startswith("name: ")
    assert words in caught.value.message
    assert "Error(" not in caught.value.message


def test_error_lists_several_problems() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(text(type="join", v=1, room="", name=""))
    assert "room:" in caught.value.message
    assert "name:" in caught.value.message


def test_long_unknown_type_is_cut_in_the_message() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(text(type="x" * 1000))
    assert "x" * 65 not in caught.value.message  # cut to 64 characters
    assert len(caught.value.message) < 300


# --- server -> client ---

CAMERA = TrackInfo(track_id="t1", participant_id="p1", kind="video", source="camera")
ANN = ParticipantInfo(participant_id="p1", name="Ann", tracks=(CAMERA,))
CAMERA_JSON = {
    "trackId": "t1",
    "participantId": "p1",
    "kind": "video",
    "source": "camera",
    "muted": False,
}
ANN_JSON = {"participantId": "p1", "name": "Ann", "tracks": [CAMERA_JSON]}

EVENTS: list[tuple[Event, dict[str, Any]]] = [
    (ParticipantJoined(ANN), {"type": "participant-joined", "participant": ANN_JSON}),
    (
        ParticipantLeft("p1", "timeout"),
        {"type": "participant-left", "participantId": "p1", "reason": "timeout"},
    ),
    (TrackPublished(CAMERA), {"type": "track-published", "track": CAMERA_JSON}),
    (
        TrackUnpublished("p1", "t1"),
        {"type": "track-unpublished", "participantId": "p1", "trackId": "t1"},
    ),
    (
        TrackMuted("p1", "t1", True),
        {"type": "track-muted", "participantId": "p1", "trackId": "t1", "muted": True},
    ),
    (
        ServerOffer("sdp", {"1": OfferedTrack("p1", "t1", "video")}),
        {
            "type": "offer",
            "sdp": "sdp",
            "tracks": {"1": {"participantId": "p1", "trackId": "t1", "kind": "video"}},
        },
    ),
    (ServerOffer("sdp"), {"type": "offer", "sdp": "sdp", "tracks": {}}),
    (SessionClosed("ice-failed"), {"type": "bye", "reason": "ice-failed"}),
    (
        PublisherLayers("t1", (LayerActivity("q", True), LayerActivity("f", False))),
        {
            "type": "publisherLayers",
            "trackId": "t1",
            "layers": [{"rid": "q", "active": True}, {"rid": "f", "active": False}],
        },
    ),
    (
        StreamState("t2", False),
        {"type": "streamState", "trackId": "t2", "state": "paused", "reason": "bandwidth"},
    ),
    (
        StreamState("t2", True),
        {"type": "streamState", "trackId": "t2", "state": "active", "reason": "bandwidth"},
    ),
    (
        ConnectionQualityReport("good", 0.0424, 0.02449, 1_850_000.4, 1_540_000.6, False),
        {
            "type": "connectionQuality",
            "quality": "good",
            "rttMs": 42,
            "lossPercent": 2.4,
            "estimateBps": 1850000,
            "allocatedBps": 1540001,
            "probing": False,
        },
    ),
    (
        ConnectionQualityReport("excellent", None, 0.0, None, 0.0, True),
        {
            "type": "connectionQuality",
            "quality": "excellent",
            "rttMs": None,
            "lossPercent": 0.0,
            "estimateBps": None,
            "allocatedBps": 0,
            "probing": True,
        },
    ),
]


@pytest.mark.parametrize(("event", "expected"), EVENTS)
def test_event_message(event: Event, expected: dict[str, Any]) -> None:
    message = event_message(event)
    assert message == expected
    assert json.loads(json.dumps(message)) == expected


def test_event_message_rejects_other_values() -> None:
    with pytest.raises(TypeError):
        event_message("nope")  # type: ignore[arg-type]


def test_joined_message() -> None:
    assert joined_message("room", "p2", (ANN,), "r1") == {
        "type": "joined",
        "v": 1,
        "room": "room",
        "participantId": "p2",
        "participants": [ANN_JSON],
        "requestId": "r1",
    }
    assert "requestId" not in joined_message("room", "p2", ())


def test_answer_message() -> None:
    answer = Answer("sdp", (PublishedTrack(mid="0", track_id="t9", kind="audio"),))
    assert answer_message(answer) == {
        "type": "answer",
        "sdp": "sdp",
        "tracks": [{"mid": "0", "trackId": "t9", "kind": "audio"}],
    }
    assert answer_message(Answer("sdp"), "r")["requestId"] == "r"


def test_small_messages() -> None:
    assert left_message() == {"type": "left"}
    assert left_message("r") == {"type": "left", "requestId": "r"}
    assert bye_message("server-shutdown") == {"type": "bye", "reason": "server-shutdown"}
    assert error_message("not-joined", "join first", "r") == {
        "type": "error",
        "code": "not-joined",
        "message": "join first",
        "requestId": "r",
    }
