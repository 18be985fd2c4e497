"""The rid header extensions (RFC 8852) on every video m-line of a connection's BUNDLE group.

A client can offer simulcast on a new m-line only with the rid extension, and Chromium (156)
offers on a new m-section only the extensions its BUNDLE group has negotiated once it has
answered an offer with video (tests/browser/test_simulcast_after_receiving.py). So the server
offers rid and repaired-rid on each new video m-line, answers them wherever a client offers
them, and keeps them where an answer took them; always with one id per URI across the BUNDLE
group (RFC 8285 §6, RFC 8843 §9.2). Real aiortc peers, their SDP given the lines a browser's
has; no network.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from sfu.media import aiortc_bridge as bridge
from sfu.media.params import URI_ABS_SEND_TIME, URI_MID, URI_REPAIRED_RID, URI_RID, Codec

VP8 = Codec(payload_type=97, name="VP8", clock_rate=90000, rtx_payload_type=98)
OPUS = Codec(payload_type=111, name="opus", clock_rate=48000, channels=2)


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


@pytest.fixture
async def client() -> AsyncIterator[RTCPeerConnection]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    yield pc
    await pc.close()


def sections(sdp: str) -> list[str]:
    return sdp.split("\r\nm=")[1:]


def extmaps(sdp: str) -> dict[str, int]:
    """URI -> id over the whole SDP; fails if a URI has two ids or an id two URIs."""
    by_uri: dict[str, int] = {}
    by_id: dict[int, str] = {}
    for ext_id, uri in re.findall(r"^a=extmap:(\d+)(?:/\w+)? (\S+)\r$", sdp, re.MULTILINE):
        assert by_uri.setdefault(uri, int(ext_id)) == int(ext_id), f"{uri}: two ids in {sdp}"
        assert by_id.setdefault(int(ext_id), uri) == uri, f"id {ext_id}: two URIs in {sdp}"
    return by_uri


def with_lines(sdp: str, mid: str, lines: list[str]) -> str:
    """``sdp`` with ``lines`` added after the a=mid line of m-line ``mid``."""
    marker = f"a=mid:{mid}\r\n"
    assert marker in sdp
    return sdp.replace(marker, marker + "".join(f"{line}\r\n" for line in lines), 1)


def rid_lines(rid: int, repaired: int, *, simulcast: bool = True) -> list[str]:
    lines = [f"a=extmap:{rid} {URI_RID}", f"a=extmap:{repaired} {URI_REPAIRED_RID}"]
    if simulcast:
        lines += ["a=rid:q send", "a=rid:h send", "a=rid:f send", "a=simulcast:send q;h;f"]
    return lines


async def publish(
    server: bridge.ServerPeerConnection, client: RTCPeerConnection, edit: str = ""
) -> str:
    """The client publishes a video track; ``edit`` is a line group, e.g. "simulcast 12 13"."""
    client.addTrack(VideoStreamTrack())
    await client.setLocalDescription(await client.createOffer())
    offer = client.localDescription.sdp
    mid = str(client.getTransceivers()[-1].mid)
    if edit:
        kind, rid, repaired = edit.split()
        offer = with_lines(offer, mid, rid_lines(int(rid), int(repaired), simulcast=kind == "sc"))
    answer = await bridge.accept_offer(server, offer)
    await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return answer


async def server_offer(
    server: bridge.ServerPeerConnection, client: RTCPeerConnection, codec: Codec = VP8
) -> str:
    new = bridge.add_send_transceiver(server, "audio" if codec.channels else "video")
    offer = await bridge.create_offer(server, {new: codec})
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    await client.setLocalDescription(await client.createAnswer())
    return offer


async def test_a_first_offer_lists_them_on_its_video_m_lines(
    server: bridge.ServerPeerConnection, client: RTCPeerConnection
) -> None:
    audio = bridge.add_send_transceiver(server, "audio")
    video = bridge.add_send_transceiver(server, "video")
    offer = await bridge.create_offer(server, {audio: OPUS, video: VP8})
    first, second = sections(offer)
    assert URI_RID not in first and URI_REPAIRED_RID not in first
    assert f"a=extmap:10 {URI_RID}\r\n" in second
    assert f"a=extmap:11 {URI_REPAIRED_RID}\r\n" in second
    extmaps(offer)


async def test_new_m_lines_take_the_ids_a_simulcast_publisher_gave_them(
    server: bridge.ServerPeerConnection, client: RTCPeerConnection
) -> None:
    await publish(server, client, "sc 12 13")
    offer = await server_offer(server, client)
    ids = extmaps(offer)
    assert (ids[URI_RID], ids[URI_REPAIRED_RID]) == (12, 13)
    assert all(URI_RID in section for section in sections(offer))


async def test_they_take_no_id_the_bundle_has_for_another_extension(
    server: bridge.ServerPeerConnection, client: RTCPeerConnection
) -> None:
    client.addTrack(VideoStreamTrack())
    await client.setLocalDescription(await client.createOffer())
    # the client numbers abs-send-time 10 and mid 11: the ids the server would prefer for rid
    offer = client.localDescription.sdp.replace(
        f"a=extmap:3 {URI_ABS_SEND_TIME}", f"a=extmap:10 {URI_ABS_SEND_TIME}"
    ).replace(f"a=extmap:1 {URI_MID}", f"a=extmap:11 {URI_MID}")
    answer = await bridge.accept_offer(server, offer)
    await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    again = await server_offer(server, client)
    ids = extmaps(again)  # one id per URI, one URI per id, over both m-lines
    assert (ids[URI_ABS_SEND_TIME], ids[URI_MID]) == (10, 11)
    assert ids[URI_RID] not in (10, 11) and ids[URI_REPAIRED_RID] not in (10, 11)
    assert URI_RID in sections(again)[1]


async def test_a_single_stream_offer_gets_them_answered(
    server: bridge.ServerPeerConnection, client: RTCPeerConnection
) -> None:
    """JSEP §5.3.1: the answer lists each supported extension the offer has; without them a
    Chromium that published one stream could not offer simulcast on its next video m-line."""
    answer = await publish(server, client, "single 10 11")
    assert f"a=extmap:10 {URI_RID}\r\n" in answer
    assert "a=simulcast" not in answer
    params = bridge.media_params(server, server.getTransceivers()[0])
    assert params.rids == ()
    assert (params.extensions[URI_RID], params.extensions[URI_REPAIRED_RID]) == (10, 11)


async def test_an_answer_that_takes_them_keeps_them_in_later_offers(
    server: bridge.ServerPeerConnection, client: RTCPeerConnection
) -> None:
    offer = await server_offer(server, client)
    (mid,) = re.findall(r"a=mid:(\S+)\r", offer)
    # as a browser answers (aiortc's own answer drops them)
    answer = with_lines(client.localDescription.sdp, mid, rid_lines(10, 11, simulcast=False))
    await bridge.accept_answer(server, answer)
    params = bridge.media_params(server, server.getTransceivers()[0])
    assert params.extensions[URI_RID] == 10
    again = await server_offer(server, client, OPUS)
    first, _ = sections(again)
    assert f"a=extmap:10 {URI_RID}\r\n" in first
    extmaps(again)


async def test_an_answer_without_them_drops_them_from_that_m_line_only(
    server: bridge.ServerPeerConnection, client: RTCPeerConnection
) -> None:
    await server_offer(server, client)
    await bridge.accept_answer(server, client.localDescription.sdp)  # aiortc answers none
    assert URI_RID not in bridge.media_params(server, server.getTransceivers()[0]).extensions
    again = await server_offer(server, client)
    first, second = sections(again)
    assert URI_RID not in first  # JSEP §5.2.2: what was not negotiated is not offered again
    assert f"a=extmap:10 {URI_RID}\r\n" in second
