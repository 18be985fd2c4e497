"""Simulcast negotiation (RFC 8851 rid, RFC 8853 simulcast, RFC 8852 rid header extensions).

Offers from Chromium (captured), Firefox and libwebrtc on Android (hand-written: see
tests/unit/sdp/README.md) are checked by sfu.media.sdp_check and answered by the server's real
peer connection (sfu.media.aiortc_bridge); hostile offers get one sentence that says what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from sfu.media import aiortc_bridge as bridge
from sfu.media.params import URI_REPAIRED_RID, URI_RID, Codec
from sfu.media.sdp_check import InvalidSdp, check_description
from sfu.media.sdp_simulcast import (
    MAX_LAYERS,
    Layer,
    answer_lines,
    receivable,
)

SDP_DIR = Path(__file__).parent / "sdp"


def fixture(name: str) -> str:
    return (SDP_DIR / f"{name}.sdp").read_text().replace("\n", "\r\n")


CHROMIUM = fixture("chromium_156_simulcast_offer")
FIREFOX = fixture("firefox_simulcast_offer")
# captured: the camera's m-line at port 0 with a=bundle-only
FIREFOX_153 = fixture("firefox_153_simulcast_offer")
ANDROID = fixture("libwebrtc_android_simulcast_offer")
FIREFOX_MEDIA_SSRCS = (2835771402, 1168036549, 3927150286)
FIREFOX_RTX = {418262907: 2835771402, 2290647713: 1168036549, 3360912854: 3927150286}


def edit(sdp: str, pattern: str, replacement: str) -> str:
    """``re.sub`` over the lines of ``sdp`` (^ and $ at line ends); it must change something."""
    lines = sdp.replace("\r\n", "\n")
    changed = re.sub(pattern, replacement, lines, flags=re.MULTILINE)
    assert changed != lines, f"{pattern} changed nothing"
    return changed.replace("\n", "\r\n")


def video_section(sdp: str) -> str:
    return sdp[sdp.index("m=video") :]


def sim_lines(sdp: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith(("a=rid:", "a=simulcast:"))]


# --- offers the server takes ---

QHF = (Layer("q"), Layer("h"), Layer("f"))


@pytest.mark.parametrize(
    ("sdp", "ids"),
    [(CHROMIUM, (10, 11)), (FIREFOX, (8, 9)), (FIREFOX_153, (9, 10)), (ANDROID, (10, 11))],
    ids=["chromium", "firefox", "firefox-153", "android"],
)
def test_stacks_simulcast_offers_are_taken(sdp: str, ids: tuple[int, int]) -> None:
    check_description(sdp, "offer", bridge.SUPPORTED_CODECS)
    described = receivable(sdp)
    assert described["0"].layers == ()  # audio: one stream
    assert described["1"].layers == QHF
    assert described["1"].extensions == {URI_RID: ids[0], URI_REPAIRED_RID: ids[1]}


def test_a_bundle_only_m_line_at_port_0_sends() -> None:
    """Firefox puts every m-line after the first at port 0 with a=bundle-only (RFC 8843 §6):
    it sends on it (its layers are taken, it counts against the track limit); a port-0 m-line
    without a=bundle-only is rejected and sends nothing."""
    assert receivable(FIREFOX_153)["1"].sending
    assert [m.sending for m in bridge.offered_m_lines(FIREFOX_153)] == [True, True]
    rejected = edit(FIREFOX_153, r"^a=bundle-only\n", "")
    rejected = edit(rejected, r"^a=group:BUNDLE 0 1$", "a=group:BUNDLE 0")
    check_description(rejected, "offer")
    assert not receivable(rejected)["1"].sending
    assert receivable(rejected)["1"].layers == ()
    assert [m.sending for m in bridge.offered_m_lines(rejected)] == [True, False]


def test_rid_lines_may_follow_the_simulcast_line() -> None:
    moved = edit(CHROMIUM, r"^(a=rid:.*\n)+(a=simulcast:.*\n)", r"\2a=rid:q send\na=rid:h send\n")
    moved = edit(moved, r"^(a=simulcast:.*\n)", r"a=rid:f send\n\1")  # and one before
    check_description(moved, "offer")
    assert receivable(moved)["1"].layers == QHF


def test_paused_alternatives_and_restrictions() -> None:
    sdp = edit(
        CHROMIUM,
        r"^a=rid:q send$",
        "a=rid:q send pt=96,102;max-width=320;max-height=180;max-fps=15.5;max-br=200000\n"
        "a=rid:q2 send depend=q;x-vendor=a b",
    )
    sdp = edit(sdp, r"^a=simulcast:send q;h;f$", "a=simulcast:send q,q2;~h;f")
    check_description(sdp, "offer")
    layers = receivable(sdp)["1"].layers
    assert layers == (Layer("q", False, (96, 102)), Layer("h", True), Layer("f"))
    assert answer_lines(layers) == [
        "a=rid:q recv",
        "a=rid:h recv",
        "a=rid:f recv",
        "a=simulcast:recv q;~h;f",
    ]


RECV_ONLY = [(r"^a=rid:(.) send$", r"a=rid:\1 recv"), (r"^a=simulcast:send", "a=simulcast:recv")]
DECLINED = {
    # a client asking the server to send it simulcast (RFC 8853 §5.3.2)
    "recv": RECV_ONLY,
    # no rid header extension: the layers could not be told apart
    "no-rid-extension": [(r"^a=extmap:10 .*\n", "")],
    # rids without a=simulcast restrict one stream: nothing to answer
    "no-simulcast": [(r"^a=simulcast:.*\n", "")],
    "port-0": [(r"^m=video 9 ", "m=video 0 "), (r"^a=group:BUNDLE 0 1$", "a=group:BUNDLE 0")],
}


@pytest.mark.parametrize("changes", DECLINED.values(), ids=DECLINED.keys())
def test_declined_simulcast_leaves_one_stream(changes: list[tuple[str, str]]) -> None:
    sdp = CHROMIUM
    for change in changes:
        sdp = edit(sdp, *change)
    check_description(sdp, "offer")
    assert receivable(sdp)["1"].layers == ()


def test_send_and_recv_in_one_line_takes_the_send_layers() -> None:
    sdp = edit(CHROMIUM, r"^a=simulcast:send q;h;f$", "a=simulcast:recv x send q;h;f\na=rid:x recv")
    check_description(sdp, "offer")
    assert receivable(sdp)["1"].layers == QHF


def test_audio_simulcast_is_declined() -> None:
    audio = CHROMIUM.replace(
        "a=ssrc:2274673999 cname:",
        "a=rid:a send\r\na=rid:b send\r\na=simulcast:send a;b\r\na=ssrc:2274673999 cname:",
    )
    audio = audio.replace(
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendonly\r\na=msid:- 2beb",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\na=sendonly\r\na=msid:- 2beb",
    )
    assert audio.count("a=simulcast") == 2
    check_description(audio, "offer")
    assert receivable(audio)["0"].layers == ()


# --- offers the server refuses ---

HOSTILE = [
    ("a=rid:q send", "a=rid:q! send", "rid 'q!' must be 1-16 characters from A-Z a-z 0-9 - _"),
    ("a=rid:q send", "a=rid:abcdefghijklmnopq send", "the WebRTC API's limit"),
    ("a=rid:q send", "a=rid:q sendonly", "direction 'sendonly' must be send or recv"),
    ("a=rid:q send", "a=rid:q send pt=96;max-width=wide", "max-width 'wide' is not a number"),
    ("a=rid:q send", "a=rid:q send max-fps=fast", "max-fps 'fast' is not a decimal number"),
    ("a=rid:q send", "a=rid:q send max-width=1;pt=96", "pt= only first"),
    ("a=rid:q send", "a=rid:q send pt=3", "allows payload type 3, which is not on the m= line"),
    ("a=rid:q send", "a=rid:q send pt=x", "payload type 'x' is not a number"),
    ("a=rid:q send", "a=rid:q send\na=rid:q send", "rid 'q' has two a=rid lines"),
    ("a=rid:q send", "a=rid:q recv", "names rid 'q', which has no a=rid:q send line"),
    ("a=rid:f send\n", "", "names rid 'f', which has no a=rid:f send line"),
    ("a=simulcast:send q;h;f", "a=simulcast:send q;h;f;q", "names rid 'q' twice"),
    ("a=simulcast:send q;h;f", "a=simulcast:send q;h,q", "names rid 'q' twice"),
    ("a=simulcast:send q;h;f", "a=simulcast:send q;;f", "rid '' must be"),
    ("a=simulcast:send q;h;f", "a=simulcast:send q;~~h;f", "rid '~h' must be"),
    ("a=simulcast:send q;h;f", "a=simulcast:send", "expected send|recv <rid>"),
    ("a=simulcast:send q;h;f", "a=simulcast:send q send h", "must be send or recv, each once"),
    ("a=simulcast:send q;h;f", "a=simulcast: send rid=q;h;f", "the draft form 'rid=' is not"),
    ("a=simulcast:send q;h;f", "a=simulcast:send q;h;f\na=simulcast:send q", "more than one"),
    (
        "a=simulcast:send q;h;f",
        "a=simulcast:send q;h;f;a;b\na=rid:a send\na=rid:b send",
        f"has 5 layers; the server takes at most {MAX_LAYERS} per m-line",
    ),
]


@pytest.mark.parametrize(("old", "new", "message"), HOSTILE, ids=[h[1] for h in HOSTILE])
def test_hostile_simulcast_offers_get_one_clear_sentence(old: str, new: str, message: str) -> None:
    sdp = CHROMIUM.replace(old.replace("\n", "\r\n"), new.replace("\n", "\r\n"), 1)
    assert sdp != CHROMIUM
    with pytest.raises(InvalidSdp) as caught:
        check_description(sdp, "offer", bridge.SUPPORTED_CODECS)
    text = str(caught.value)
    assert text.startswith("m=video section 2 (mid 1): "), text
    assert message in text, text
    assert "Error(" not in text and "\n" not in text


# --- the server's answers and offers ---


@pytest.fixture(autouse=True)
def loopback_only() -> object:
    bridge.set_ice_host_addresses(["127.0.0.1"])
    yield
    bridge.set_ice_host_addresses([])


@pytest.fixture
async def server() -> AsyncIterator[bridge.ServerPeerConnection]:
    pc = bridge.ServerPeerConnection()
    yield pc
    await pc.close()


@pytest.mark.parametrize(
    "sdp",
    [CHROMIUM, FIREFOX, FIREFOX_153, ANDROID],
    ids=["chromium", "firefox", "firefox-153", "android"],
)
async def test_answer_receives_every_layer(server: bridge.ServerPeerConnection, sdp: str) -> None:
    answer = await bridge.accept_offer(server, sdp)
    video = video_section(answer)
    assert sim_lines(video) == [
        "a=rid:q recv",
        "a=rid:h recv",
        "a=rid:f recv",
        "a=simulcast:recv q;h;f",
    ]
    assert sim_lines(answer[: answer.index("m=video")]) == []  # not on the audio m-line
    ids = receivable(sdp)["1"].extensions
    assert f"a=extmap:{ids[URI_RID]} {URI_RID}" in video
    assert f"a=extmap:{ids[URI_REPAIRED_RID]} {URI_REPAIRED_RID}" in video
    audio, camera = server.getTransceivers()
    params = bridge.media_params(server, camera)
    assert params.rids == ("q", "h", "f")
    assert params.extensions[URI_RID] == ids[URI_RID]
    assert params.extensions[URI_REPAIRED_RID] == ids[URI_REPAIRED_RID]
    assert bridge.media_params(server, audio).rids == ()
    assert URI_RID not in bridge.media_params(server, audio).extensions


async def test_firefox_layer_ssrcs_stay_usable(server: bridge.ServerPeerConnection) -> None:
    """Firefox declares all six SSRCs: three media SSRCs, each RTX SSRC mapped to its media
    SSRC by the FID groups; which rid each carries is left to the packets' rid extension."""
    await bridge.accept_offer(server, FIREFOX)
    params = bridge.media_params(server, server.getTransceivers()[1])
    assert params.remote_ssrcs == FIREFOX_MEDIA_SSRCS
    assert dict(params.remote_rtx) == FIREFOX_RTX


async def test_paused_layer_is_answered_paused(server: bridge.ServerPeerConnection) -> None:
    sdp = edit(CHROMIUM, r"^a=simulcast:send q;h;f$", "a=simulcast:send ~q;h;f")
    answer = await bridge.accept_offer(server, sdp)
    assert "a=simulcast:recv ~q;h;f" in answer
    assert bridge.media_params(server, server.getTransceivers()[1]).rids == ("q", "h", "f")


async def test_layer_restricted_to_a_codec_not_answered_is_left_out(
    server: bridge.ServerPeerConnection,
) -> None:
    sdp = edit(CHROMIUM, r"^a=rid:q send$", "a=rid:q send pt=45")  # AV1: aiortc has none
    answer = await bridge.accept_offer(server, sdp)
    assert sim_lines(video_section(answer)) == [
        "a=rid:h recv",
        "a=rid:f recv",
        "a=simulcast:recv h;f",
    ]
    assert bridge.media_params(server, server.getTransceivers()[1]).rids == ("h", "f")
    # the client's re-offer, same as before, is still taken
    again = await bridge.accept_offer(server, sdp.replace(" 2 IN IP4", " 3 IN IP4"))
    assert "a=simulcast:recv h;f" in again


@pytest.mark.parametrize(
    "changes", [RECV_ONLY, DECLINED["no-rid-extension"]], ids=["recv", "no-ext"]
)
async def test_declined_simulcast_is_answered_without_it(
    server: bridge.ServerPeerConnection, changes: list[tuple[str, str]]
) -> None:
    sdp = CHROMIUM
    for change in changes:
        sdp = edit(sdp, *change)
    answer = await bridge.accept_offer(server, sdp)
    assert sim_lines(answer) == []
    # the rid header extension is answered where offered, simulcast or not (JSEP §5.3.1)
    assert (f"a=extmap:10 {URI_RID}" in answer) == (f"a=extmap:10 {URI_RID}" in sdp)
    assert bridge.media_params(server, server.getTransceivers()[1]).rids == ()


async def test_re_offers_keep_the_layers_and_a_changed_set_is_refused(
    server: bridge.ServerPeerConnection,
) -> None:
    first = await bridge.accept_offer(server, CHROMIUM)
    again = await bridge.accept_offer(server, CHROMIUM.replace(" 2 IN IP4", " 3 IN IP4"))
    assert sim_lines(again) == sim_lines(first)
    paused = edit(CHROMIUM, r"^a=simulcast:send q;h;f$", "a=simulcast:send q;h;~f")
    assert "a=simulcast:recv q;h;~f" in await bridge.accept_offer(server, paused)
    fewer = edit(CHROMIUM, r"^a=simulcast:send q;h;f$", "a=simulcast:send q;h")
    for changed in (fewer, edit(CHROMIUM, r"^a=simulcast:.*\n", "")):
        with pytest.raises(ValueError) as caught:
            await bridge.accept_offer(server, changed)
        assert str(caught.value).startswith(
            "mid '1': the simulcast layers of a sending m-line cannot change (negotiated: "
            "q, h, f; this offer: "
        )
        assert server.signalingState == "stable"
        assert bridge.media_params(server, server.getTransceivers()[1]).rids == ("q", "h", "f")
    # an m-line that stopped sending may come back with other layers (a new track)
    inactive = edit(CHROMIUM, r"^a=sendonly$", "a=inactive")
    inactive = edit(inactive, r"^a=(rid|simulcast):.*\n", "")
    assert sim_lines(await bridge.accept_offer(server, inactive)) == []
    assert "a=simulcast:recv q;h\r\n" in await bridge.accept_offer(server, fewer)


# --- renegotiation with a real aiortc client (its SDP given rid lines as a browser's has) ---

VIDEO_RID_LINES = [
    f"a=extmap:10 {URI_RID}",
    f"a=extmap:11 {URI_REPAIRED_RID}",
    "a=rid:q send",
    "a=rid:h send",
    "a=rid:f send",
    "a=simulcast:send q;h;f",
]


def with_lines(sdp: str, mid: str, lines: list[str]) -> str:
    """``sdp`` with ``lines`` added after the a=mid line of m-line ``mid``."""
    marker = f"a=mid:{mid}\r\n"
    assert marker in sdp
    return sdp.replace(marker, marker + "".join(f"{line}\r\n" for line in lines), 1)


async def published_simulcast(
    server: bridge.ServerPeerConnection,
) -> tuple[RTCPeerConnection, str]:
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTrack(VideoStreamTrack())
    await client.setLocalDescription(await client.createOffer())
    mid = str(client.getTransceivers()[0].mid)
    offer = with_lines(client.localDescription.sdp, mid, VIDEO_RID_LINES)
    answer = await bridge.accept_offer(server, offer)
    await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return client, mid


async def server_offer(server: bridge.ServerPeerConnection, client: RTCPeerConnection) -> str:
    new = bridge.add_send_transceiver(server, "video")
    vp8 = Codec(payload_type=97, name="VP8", clock_rate=90000, rtx_payload_type=98)
    offer = await bridge.create_offer(server, {new: vp8})
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    await client.setLocalDescription(await client.createAnswer())
    return offer


async def test_server_offers_keep_simulcast_and_take_answers_that_keep_it(
    server: bridge.ServerPeerConnection,
) -> None:
    """JSEP §5.2.2: a subsequent offer keeps what was negotiated; a browser answering an offer
    without a=simulcast:recv would send one layer from then on."""
    client, mid = await published_simulcast(server)
    try:
        offer = await server_offer(server, client)
        sections = offer.split("m=video")[1:]
        assert len(sections) == 2
        assert sim_lines(sections[0]) == [
            "a=rid:q recv",
            "a=rid:h recv",
            "a=rid:f recv",
            "a=simulcast:recv q;h;f",
        ]
        assert f"a=extmap:10 {URI_RID}" in sections[0]
        assert f"a=extmap:11 {URI_REPAIRED_RID}" in sections[0]
        # the new m-line offers the rid extensions too, with the same ids (RFC 8285 §6)
        assert sim_lines(sections[1]) == []
        assert f"a=extmap:10 {URI_RID}" in sections[1]
        assert f"a=extmap:11 {URI_REPAIRED_RID}" in sections[1]
        answer = with_lines(client.localDescription.sdp, mid, VIDEO_RID_LINES)
        await bridge.accept_answer(server, answer)
        params = bridge.media_params(server, server.getTransceivers()[0])
        assert params.rids == ("q", "h", "f")
        assert params.extensions[URI_RID] == 10
        assert params.extensions[URI_REPAIRED_RID] == 11
        # and the next offer still has them
        again = await server_offer(server, client)
        assert sim_lines(again.split("m=video")[1]) == sim_lines(sections[0])
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [*VIDEO_RID_LINES[:-1], "a=rid:x send", "a=simulcast:send q;h;f;x"],
            "mid '0': a=simulcast names rid 'x', which the server's offer did not have",
        ),
        (
            VIDEO_RID_LINES[:2],
            "mid '0': the simulcast layers of a sending m-line cannot change (negotiated: "
            "q, h, f; this answer: one stream, no simulcast)",
        ),
    ],
    ids=["unoffered-rid", "dropped"],
)
async def test_answers_that_change_the_layers_are_refused(
    server: bridge.ServerPeerConnection, lines: list[str], message: str
) -> None:
    client, mid = await published_simulcast(server)
    try:
        await server_offer(server, client)
        answer = with_lines(client.localDescription.sdp, mid, lines)
        with pytest.raises(ValueError) as caught:
            await bridge.accept_answer(server, answer)
        assert str(caught.value).startswith(message), str(caught.value)
        assert server.signalingState == "have-local-offer"  # nothing applied
        assert bridge.media_params(server, server.getTransceivers()[0]).rids == ("q", "h", "f")
    finally:
        await client.close()
