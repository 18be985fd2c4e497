"""The Python client's rid simulcast (sfu_client.simulcast*): SDP, packetization, and a real
aiortc publisher sending to the SFU's own peer connection over 127.0.0.1.

The receiving side is ``ServerPeerConnection``: the test reads the decrypted RTP the SFU would
route and sends it RTCP (PLI, FIR, NACK, RR) for the layers' SSRCs. Its answer gets the
simulcast lines here, as the server's negotiation adds them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from loadtest.media import encode_video
from sfu.media import aiortc_bridge as bridge
from sfu.media.params import URI_ABS_SEND_TIME, URI_MID, URI_REPAIRED_RID, URI_RID
from sfu.rtp import rtcp
from sfu.rtp.header import RTP_FIXED, parse_extensions, payload_bounds
from sfu_client import LocalTrack, SfuClient
from sfu_client.media import MarkerVideoTrack
from sfu_client.simulcast import SimulcastPublisher
from sfu_client.simulcast_media import (
    LayerSize,
    PreEncodedLayers,
    is_keyframe,
    keyframe_size,
    vp8_payloads,
)
from sfu_client.simulcast_sdp import (
    check_rids,
    choose_extension_ids,
    extension_ids,
    parse_simulcast,
    simulcast_answer,
    simulcast_offer,
)

from .test_client_messages import NoSession, SilentWebSocket

WIDTH, HEIGHT, FPS = 320, 180, 15
WAIT = 10.0  # bound for conditions (frames arrive at 15/s; the machine is shared)


@pytest.fixture(autouse=True)
def loopback_only() -> object:
    bridge.set_ice_host_addresses(["127.0.0.1"])
    yield
    bridge.set_ice_host_addresses([])


def _section(sdp: str, mid: str) -> list[str]:
    sections = re.split(r"\r\n(?=m=)", sdp)
    section = next(s for s in sections if f"a=mid:{mid}\r\n" in s + "\r\n")
    return [line for line in section.split("\r\n") if line]


async def _offer(audio: bool = True, layers: int = 1) -> tuple[str, list[SimulcastPublisher]]:
    """A real aiortc offer (an audio m-line, simulcast m-lines) through the publishers."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if audio:
            pc.addTransceiver("audio", direction="sendonly")
        publishers = [SimulcastPublisher(MarkerVideoTrack((255, 0, 0))) for _ in range(layers)]
        for publisher in publishers:
            publisher.attach(pc)
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        for publisher in publishers:
            sdp = publisher.offer(sdp)
        return sdp, publishers
    finally:
        await pc.close()


# --- SDP ---


async def test_offer_lists_the_layers_as_chromium_does_and_no_ssrc() -> None:
    sdp, _ = await _offer()
    video = _section(sdp, "1")
    assert [line for line in video if line.startswith(("a=rid:", "a=simulcast:"))] == [
        "a=rid:q send",
        "a=rid:h send",
        "a=rid:f send",
        "a=simulcast:send q;h;f",
    ]
    assert not [line for line in video if line.startswith(("a=ssrc", "a=ssrc-group"))]
    assert any(line.startswith("a=ssrc:") for line in _section(sdp, "0")), "audio keeps its own"
    ids = extension_ids(sdp)
    rid_ids = {ids[URI_RID], ids[URI_REPAIRED_RID]}
    others = {i for uri, i in ids.items() if uri not in (URI_RID, URI_REPAIRED_RID)}
    assert len(rid_ids) == 2 and not rid_ids & others  # one URI per id on the transport
    bridge.parse_sdp(sdp)  # the server's checks take it


async def test_offers_keep_their_ids_and_a_second_m_line_shares_them() -> None:
    sdp, (first, _) = await _offer(layers=2)
    ids = extension_ids(sdp)
    for mid in ("1", "2"):
        lines = _section(sdp, mid)
        assert f"a=extmap:{ids[URI_RID]} {URI_RID}" in lines
        assert "a=simulcast:send q;h;f" in lines
    # a renegotiation (aiortc's fresh offer lacks the extension) keeps the ids chosen first
    again = first.offer(re.sub(r"a=extmap:\d+ urn:ietf:params:rtp-hdrext:sdes:r\S+\r\n", "", sdp))
    assert extension_ids(again)[URI_RID] == ids[URI_RID]
    assert first.offer(sdp) == sdp  # an offer already edited stays as it is


def test_an_id_kept_from_before_that_another_uri_took_is_an_error() -> None:
    sdp = "v=0\r\nm=video 9 X 96\r\na=extmap:4 urn:x\r\na=mid:0\r\n"
    with pytest.raises(ValueError, match=r"extension id 4 of .* is taken by urn:x"):
        choose_extension_ids(sdp, {URI_RID: 4, URI_REPAIRED_RID: 5})


def test_rids_are_checked() -> None:
    for rids, message in (
        ([], "at least one"),
        (["a b"], "1-16 letters"),
        (["x" * 17], "1-16 letters"),
        (["q", "q"], "distinct"),
    ):
        with pytest.raises(ValueError, match=message):
            check_rids(rids)


ANSWER = (
    "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 100 101\r\na=extmap:1 {mid}\r\na=extmap:7 {rid}\r\n"
    "a=extmap:8 {rrid}\r\na=mid:1\r\na=recvonly\r\na=rtpmap:100 VP8/90000\r\n"
    "a=rtpmap:101 rtx/90000\r\na=fmtp:101 apt=100\r\n{extra}"
)


def _answer(extra: str, *, rid_extension: bool = True) -> str:
    text = ANSWER.format(mid=URI_MID, rid=URI_RID, rrid=URI_REPAIRED_RID, extra=extra)
    return text if rid_extension else text.replace(f"a=extmap:7 {URI_RID}\r\n", "")


def test_answer_keeps_our_order_and_only_what_it_receives() -> None:
    extra = "a=rid:f recv\r\na=rid:q recv\r\na=rid:x recv\r\na=simulcast:recv f;~q;x\r\n"
    negotiated = parse_simulcast(_answer(extra), "1", "recv", ["q", "h", "f"])
    assert negotiated.rids == ("q", "f")  # h removed by the answerer, x never offered
    assert negotiated.paused == {"q"}
    assert negotiated.payload_types == {"vp8": 100, "rtx": 101}
    assert negotiated.rtx_payload_types == {100: 101}
    assert negotiated.extensions[URI_RID] == 7
    # alternatives (RFC 8853 §5.1) and a rid without its a=rid line
    extra = "a=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv h,f;q\r\n"
    assert parse_simulcast(_answer(extra), "1", "recv", ["q", "h", "f"]).rids == ("h", "f")


def test_answer_without_simulcast_or_rid_extension_means_one_stream() -> None:
    assert parse_simulcast(_answer(""), "1", "recv", ["q", "h", "f"]).rids == ()
    extra = "a=rid:q recv\r\na=simulcast:recv q\r\n"
    no_rid = _answer(extra, rid_extension=False)
    assert parse_simulcast(no_rid, "1", "recv", ["q", "h", "f"]).rids == ()


def test_our_answer_to_a_server_offer_sends_what_it_still_receives() -> None:
    offer = _answer("a=rid:q recv\r\na=rid:f recv\r\na=simulcast:recv q;f\r\n")
    ours = (
        f"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 100 101\r\na=extmap:1 {URI_MID}\r\na=mid:1\r\n"
        "a=sendonly\r\na=ssrc-group:FID 1 2\r\na=ssrc:1 cname:x\r\na=ssrc:2 cname:x\r\n"
    )
    lines = _section(simulcast_answer(ours, offer, "1", ["q", "h", "f"]), "1")
    assert not [line for line in lines if line.startswith("a=ssrc")]
    assert f"a=extmap:7 {URI_RID}" in lines and f"a=extmap:8 {URI_REPAIRED_RID}" in lines
    assert lines[-3:] == ["a=rid:q send", "a=rid:f send", "a=simulcast:send q;f"]
    # an offer without simulcast gets no rid lines, and still no a=ssrc
    plain = _section(simulcast_answer(ours, _answer(""), "1", ["q", "h", "f"]), "1")
    assert not [line for line in plain if line.startswith(("a=ssrc", "a=rid", "a=simul"))]


def test_an_inactive_m_line_offers_no_layers() -> None:
    sdp = "v=0\r\nm=video 9 X 96\r\na=mid:0\r\na=inactive\r\na=ssrc:5 cname:x\r\n"
    assert (
        simulcast_offer(sdp, "0", ["q"], {}) == "v=0\r\nm=video 9 X 96\r\na=mid:0\r\na=inactive\r\n"
    )


# --- VP8 ---


def test_vp8_payloads_carry_the_descriptor_and_split_the_frame() -> None:
    frame = bytes(range(256)) * 10  # 2560 bytes
    payloads = vp8_payloads(frame, 0x1234, max_size=1000)
    assert [len(p) for p in payloads] == [1000, 1000, 560 + 3 * 4]
    assert payloads[0][:4] == bytes((0x90, 0x80, 0x80 | 0x12, 0x34))  # X, S; I; M + 15-bit id
    assert all(p[:4] == bytes((0x80, 0x80, 0x92, 0x34)) for p in payloads[1:])
    assert b"".join(p[4:] for p in payloads) == frame
    assert vp8_payloads(b"", 1) == []


def test_keyframe_header_gives_the_size() -> None:
    clip = encode_video(80, 46, fps=15, seconds=0.2, bitrate=50_000)
    assert is_keyframe(clip.frames[0]) and keyframe_size(clip.frames[0]) == (80, 46)
    assert not is_keyframe(clip.frames[1]) and keyframe_size(clip.frames[1]) is None


# --- a publisher and the SFU's peer connection ---


@dataclass
class Received:
    """What the SFU's side of the connection got, parsed."""

    extension_ids: dict[str, int]
    packets: list[bytes] = field(default_factory=list)
    rtcp: list[rtcp.RtcpPacket] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add_rtp(self, data: bytes) -> None:
        self.packets.append(data)
        self.changed.set()

    def add_rtcp(self, data: bytes) -> None:
        self.rtcp.extend(rtcp.parse_compound(data))
        self.changed.set()

    def media(self, ssrc: int) -> list[bytes]:
        return [p for p in self.packets if RTP_FIXED.unpack_from(p)[4] == ssrc]

    def keyframes(self, ssrc: int) -> int:
        """Frames starting with a VP8 keyframe (S=1, then the frame's first byte)."""
        count = 0
        for packet in self.media(ssrc):
            start, _ = payload_bounds(packet)
            if packet[start] & 0x10 and is_keyframe(packet[start + 4 :]):
                count += 1
        return count

    def frames(self, ssrc: int) -> int:
        return sum(1 for p in self.media(ssrc) if p[1] & 0x80)

    def extension(self, packet: bytes, uri: str) -> bytes | None:
        return parse_extensions(packet).get(self.extension_ids[uri])


def _accept_simulcast(answer: str, offer: str, mid: str, rids: Sequence[str]) -> str:
    """The SFU's answer with the simulcast lines of RFC 8853 §5.3, unless it has them (the
    server's negotiation adds them, so that this test does not depend on it)."""
    if "a=simulcast:" in answer:
        return answer
    ids = extension_ids(offer)
    lines = [f"a=extmap:{ids[u]} {u}" for u in (URI_RID, URI_REPAIRED_RID)]
    lines += [f"a=rid:{rid} recv" for rid in rids] + [f"a=simulcast:recv {';'.join(rids)}"]
    return answer.replace(f"a=mid:{mid}\r\n", f"a=mid:{mid}\r\n" + "\r\n".join(lines) + "\r\n")


@dataclass
class Link:
    client: RTCPeerConnection
    server: bridge.ServerPeerConnection
    publisher: SimulcastPublisher
    received: Received

    def send_rtcp(self, *packets: rtcp.RtcpPacket) -> None:
        transport = self.server.media_transport
        assert transport is not None
        transport.send_rtcp(rtcp.serialize(packets))

    def ssrc(self, rid: str) -> int:
        return self.publisher.layers[rid].ssrc

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait (at most WAIT seconds) until ``condition()``, re-checked on each packet."""
        try:
            async with asyncio.timeout(WAIT):
                while not condition():
                    self.received.changed.clear()
                    await self.received.changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {what} within {WAIT} s") from None


async def _link(
    publisher: SimulcastPublisher, *, simulcast: bool = True
) -> tuple[RTCPeerConnection, bridge.ServerPeerConnection, Received]:
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = bridge.ServerPeerConnection()
    received = Received({})

    def on_transport(transport: bridge.MediaTransport) -> None:
        transport.on_rtp = lambda data, now: received.add_rtp(data)
        transport.on_rtcp = received.add_rtcp

    server.on_media_transport = on_transport
    publisher.attach(client)
    await client.setLocalDescription(await client.createOffer())
    offer = publisher.offer(client.localDescription.sdp)
    answer = await bridge.accept_offer(server, offer)
    if simulcast:
        answer = _accept_simulcast(answer, offer, "0", publisher.rids)
    else:  # an answerer that knows no simulcast
        answer = re.sub(r"a=(rid|simulcast|extmap:\d+ \S+-stream-id).*\r\n", "", answer)
    received.extension_ids = extension_ids(answer)
    publisher.apply_answer(answer)
    await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return client, server, received


@pytest.fixture
async def link() -> AsyncIterator[Link]:
    publisher = SimulcastPublisher(MarkerVideoTrack((0, 0, 255), WIDTH, HEIGHT, FPS), fps=FPS)
    client, server, received = await _link(publisher)
    try:
        yield Link(client, server, publisher, received)
    finally:
        await client.close()
        await server.close()
    assert publisher.closed  # closing the connection stopped it


async def test_each_layer_is_one_ssrc_with_mid_rid_and_its_own_size(link: Link) -> None:
    received = link.received
    await link.until(lambda: all(received.frames(link.ssrc(r)) >= 3 for r in "qhf"), "frames")
    sizes = {}
    for rid in "qhf":
        packets = received.media(link.ssrc(rid))
        assert {received.extension(p, URI_RID) for p in packets} == {rid.encode()}
        assert {received.extension(p, URI_MID) for p in packets} == {b"0"}
        assert all(received.extension(p, URI_ABS_SEND_TIME) for p in packets)
        assert {p[1] & 0x7F for p in packets} == {_payload_types(link)["vp8"]}
        start, _ = payload_bounds(packets[0])
        sizes[rid] = keyframe_size(packets[0][start + 4 :])
    assert sizes == {"q": (80, 45), "h": (160, 90), "f": (320, 180)}
    ssrcs = {RTP_FIXED.unpack_from(p)[4] for p in received.packets}
    assert ssrcs == {link.ssrc(r) for r in "qhf"}


def _payload_types(link: Link) -> dict[str, int]:
    assert link.publisher.negotiated is not None
    return dict(link.publisher.negotiated.payload_types)


async def _settled(link: Link) -> dict[str, int]:
    """Wait until every layer sent its first keyframe and more; keyframes so far per rid."""
    await link.until(lambda: all(link.received.frames(link.ssrc(r)) >= 3 for r in "qhf"), "frames")
    return {rid: link.received.keyframes(link.ssrc(rid)) for rid in "qhf"}


async def _frames_later(link: Link, rid: str, count: int) -> None:
    target = link.received.frames(link.ssrc(rid)) + count
    await link.until(lambda: link.received.frames(link.ssrc(rid)) >= target, f"{count} frames")


async def test_a_pli_makes_one_keyframe_of_its_layer_only(link: Link) -> None:
    before = await _settled(link)
    assert before == {"q": 1, "h": 1, "f": 1}
    link.send_rtcp(rtcp.Pli(1, link.ssrc("h")), rtcp.Pli(1, link.ssrc("h")))  # coalesced
    h = link.ssrc("h")
    await link.until(lambda: link.received.keyframes(h) > before["h"], "a keyframe of h")
    await _frames_later(link, "f", 5)
    after = {rid: link.received.keyframes(link.ssrc(rid)) for rid in "qhf"}
    assert after == {"q": 1, "h": 2, "f": 1}
    assert link.publisher.layers["h"].keyframe_requests == 2


async def test_a_fir_counts_once_per_command_sequence_number(link: Link) -> None:
    await _settled(link)
    q = link.ssrc("q")
    link.send_rtcp(rtcp.Fir(1, [(q, 7)]))
    await link.until(lambda: link.received.keyframes(q) == 2, "a keyframe of q")
    link.send_rtcp(rtcp.Fir(1, [(q, 7)]))  # the same request again (RFC 5104 §4.3.1.2)
    await _frames_later(link, "q", 5)
    assert link.received.keyframes(q) == 2
    assert {r: link.received.keyframes(link.ssrc(r)) for r in "hf"} == {"h": 1, "f": 1}


async def test_a_layer_turned_off_sends_nothing_and_resumes_with_a_keyframe(link: Link) -> None:
    await _settled(link)
    h = link.ssrc("h")
    link.publisher.set_active("h", False)
    stopped = len(link.received.media(h))
    await _frames_later(link, "f", 6)
    # a frame being encoded when it was turned off is dropped, not sent
    assert len(link.received.media(h)) == stopped
    link.publisher.set_active("h", True)
    await link.until(lambda: len(link.received.media(h)) > stopped, "h again")
    start, _ = payload_bounds(link.received.media(h)[stopped])
    assert is_keyframe(link.received.media(h)[stopped][start + 4 :])
    with pytest.raises(
        ValueError, match=r"no simulcast layer 'x'; the layers are \['q', 'h', 'f'\]"
    ):
        link.publisher.set_active("x", False)
    # a publisherLayers event: rids this publisher does not send are ignored
    link.publisher.set_layers({"q": False, "x": True})
    assert [r for r, layer in link.publisher.layers.items() if layer.sending] == ["h", "f"]


async def test_a_nack_is_answered_by_rtx_with_the_repaired_rid(link: Link) -> None:
    await _settled(link)
    f = link.publisher.layers["f"]
    original = link.received.media(f.ssrc)[-1]
    seq = RTP_FIXED.unpack_from(original)[2]
    link.send_rtcp(rtcp.Nack(1, f.ssrc, [seq, (seq + 5000) & 0xFFFF]))  # the second: never sent
    await link.until(lambda: bool(link.received.media(f.rtx_ssrc)), "an RTX packet")
    (rtx,) = link.received.media(f.rtx_ssrc)
    assert rtx[1] & 0x7F == _payload_types(link)["rtx"]
    assert link.received.extension(rtx, URI_REPAIRED_RID) == b"f"
    assert link.received.extension(rtx, URI_RID) is None
    start, end = payload_bounds(rtx)
    original_start, _ = payload_bounds(original)
    assert rtx[start : start + 2] == seq.to_bytes(2, "big")  # OSN, RFC 4588 §4
    assert rtx[start + 2 : end] == original[original_start:]
    assert RTP_FIXED.unpack_from(rtx)[3] == RTP_FIXED.unpack_from(original)[3]
    assert (f.nacked, f.retransmitted) == (2, 1)


async def test_acknowledged_ssrcs_stop_carrying_mid_and_rid(link: Link) -> None:
    await _settled(link)
    q, f = link.ssrc("q"), link.ssrc("f")
    block = rtcp.ReportBlock(q, 0, 0, 0, 0, 0, 0)
    link.send_rtcp(rtcp.ReceiverReport(1, [block]))
    await link.until(lambda: link.publisher.layers["q"].acked, "the ack")
    sent_q, sent_f = len(link.received.media(q)), len(link.received.media(f))
    await _frames_later(link, "q", 3)
    later_q = link.received.media(q)[sent_q:]
    assert all(link.received.extension(p, URI_RID) is None for p in later_q)
    assert all(link.received.extension(p, URI_MID) is None for p in later_q)
    assert all(link.received.extension(p, URI_ABS_SEND_TIME) for p in later_q)
    later_f = link.received.media(f)[sent_f:]
    assert later_f and all(link.received.extension(p, URI_RID) == b"f" for p in later_f)


async def test_every_layer_sends_reports_with_its_cname(link: Link) -> None:
    await _settled(link)

    def reported() -> set[int]:
        return {p.ssrc for p in link.received.rtcp if isinstance(p, rtcp.SenderReport)}

    await link.until(lambda: reported() >= {link.ssrc(r) for r in "qhf"}, "a report per layer")
    reports = [p for p in link.received.rtcp if isinstance(p, rtcp.SenderReport)]
    assert all(r.ntp_timestamp > 0 and r.packet_count > 0 for r in reports)
    cnames = {
        c for p in link.received.rtcp if isinstance(p, rtcp.SourceDescription) for c in p.chunks
    }
    assert {ssrc for ssrc, _ in cnames} >= {link.ssrc(r) for r in "qhf"}
    assert all(cname for _, cname in cnames)


async def test_without_simulcast_in_the_answer_only_the_first_layer_goes() -> None:
    publisher = SimulcastPublisher(MarkerVideoTrack((0, 255, 0), WIDTH, HEIGHT, FPS), fps=FPS)
    client, server, received = await _link(publisher, simulcast=False)
    try:
        q = publisher.layers["q"].ssrc
        link = Link(client, server, publisher, received)
        await link.until(lambda: received.frames(q) >= 3, "frames of q")
        assert {RTP_FIXED.unpack_from(p)[4] for p in received.packets} == {q}
        assert URI_RID not in received.extension_ids  # and so no rid in the packets
        assert all(received.extension(p, URI_MID) == b"0" for p in received.packets)
    finally:
        await client.close()
        await server.close()


async def test_pre_encoded_layers_are_sent_as_they_are() -> None:
    clips = {
        "lo": encode_video(80, 46, fps=FPS, seconds=1.0, bitrate=40_000),
        "hi": encode_video(160, 90, fps=FPS, seconds=1.0, bitrate=80_000),
    }
    source = PreEncodedLayers(clips)
    publisher = SimulcastPublisher(source, always_send_rid=True)
    assert publisher.rids == ("lo", "hi")
    client, server, received = await _link(publisher)
    link = Link(client, server, publisher, received)
    try:
        lo, hi = link.ssrc("lo"), link.ssrc("hi")
        await link.until(lambda: received.frames(lo) >= 4 and received.frames(hi) >= 4, "frames")
        for rid, ssrc in (("lo", lo), ("hi", hi)):
            assert {received.extension(p, URI_RID) for p in received.media(ssrc)} == {rid.encode()}
            assert _frames_of(received.media(ssrc))[:4] == list(clips[rid].frames[:4])
        link.send_rtcp(rtcp.Pli(1, hi))
        await link.until(lambda: received.keyframes(hi) == 2, "the clip restarted on hi")
        await _frames_later(link, "lo", 3)
        assert received.keyframes(lo) == 1
    finally:
        await client.close()
        await server.close()
    assert source.readyState == "ended"


def _frames_of(packets: Sequence[bytes]) -> list[bytes]:
    """The VP8 frames the packets carry (in order, no loss on loopback)."""
    frames: list[bytes] = []
    current = b""
    for packet in packets:
        start, end = payload_bounds(packet)
        current += packet[start + 4 : end]
        if packet[1] & 0x80:
            frames.append(current)
            current = b""
    return frames


def test_a_layer_needs_its_size_divided_not_multiplied() -> None:
    with pytest.raises(ValueError, match=r"scale 0\.5 is below 1"):
        SimulcastPublisher(MarkerVideoTrack((0, 0, 0)), [LayerSize("x", 0.5)])


async def test_the_client_applies_publisher_layers_to_its_simulcast_track() -> None:
    client = SfuClient(NoSession(), SilentWebSocket())  # type: ignore[arg-type]
    publisher = SimulcastPublisher(MarkerVideoTrack((0, 0, 0)))
    transceiver: Any = None  # never negotiated: only the layers' switches matter here
    client.local_tracks["TR_1"] = LocalTrack(
        "TR_1", "0", "video", "camera", publisher.track, transceiver, simulcast=publisher
    )
    message = {
        "type": "publisherLayers",
        "trackId": "TR_1",
        "layers": [{"rid": "q", "active": True}, {"rid": "f", "active": False}],
    }
    try:
        client._on_text(json.dumps(message))
        assert {r: layer.active for r, layer in publisher.layers.items()} == {
            "q": True,
            "h": True,
            "f": False,
        }
    finally:
        await client.close()
        await publisher.close()
