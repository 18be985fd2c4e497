"""Guards on the aiortc/aioice internals sfu/media/aiortc_bridge.py relies on.

If an upgrade of aiortc or aioice moves one of them, these tests fail and say which. The functional
tests connect a real aiortc client to a ServerPeerConnection over 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any, cast

import aioice.ice
import aioice.stun
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc import rtcicetransport as aiortc_rtcicetransport
from aiortc import rtcpeerconnection as aiortc_rtcpeerconnection
from aiortc import sdp as aiortc_sdp
from aiortc.codecs import HEADER_EXTENSIONS
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport, State
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from cryptography.hazmat.primitives.asymmetric import ec

from sfu.media import aiortc_bridge as bridge
from sfu.media.params import TRANSPORT_CC, URI_REPAIRED_RID, URI_RID, URI_TRANSPORT_CC, Codec
from sfu.rtp.header import build_extension_block, rewrite

MID_BLOCK = build_extension_block([(1, b"0")])
#: Chromium's offer of a 3-layer simulcast camera (tests/unit/sdp/README.md)
CHROMIUM = (Path(__file__).parent / "sdp" / "chromium_156_simulcast_offer.sdp").read_text()
CHROMIUM = CHROMIUM.replace("\n", "\r\n")


@pytest.fixture(autouse=True)
def loopback_only() -> object:
    bridge.set_ice_host_addresses(["127.0.0.1"])
    yield
    bridge.set_ice_host_addresses([])


def test_private_names_still_exist() -> None:
    pc_private = [
        "_RTCPeerConnection__createDtlsTransport",
        "_RTCPeerConnection__createTransceiver",
    ]
    for name in pc_private:
        assert hasattr(RTCPeerConnection, name), f"aiortc moved RTCPeerConnection.{name}"
    for name in ("_handle_rtp_data", "_handle_rtcp_data", "_recv_next"):
        assert hasattr(RTCDtlsTransport, name), f"aiortc moved RTCDtlsTransport.{name}"
    assert State.CONNECTED.name == "CONNECTED"
    for name in ("_get_mline_index", "_set_mline_index", "_set_mid"):
        assert hasattr(RTCRtpTransceiver, name), f"aiortc moved RTCRtpTransceiver.{name}"
    assert "request_received" in vars(aioice.ice.Connection)
    for name in ("_remote_candidates_expected", "_prune_components"):  # await_peer_reflexive
        assert name in vars(aioice.ice.Connection), f"aioice moved Connection.{name}"
    assert list(inspect.signature(aioice.ice.Connection.request_received).parameters) == [
        "self",
        "message",
        "addr",
        "protocol",
    ]
    assert list(inspect.signature(aioice.ice.Connection.data_received).parameters) == [
        "self",
        "data",
        "component",
    ]
    assert inspect.iscoroutinefunction(aioice.ice.StunProtocol.send_data)
    assert list(inspect.signature(aioice.ice.get_host_addresses).parameters) == [
        "use_ipv4",
        "use_ipv6",
    ]


class _Receiver:
    def __init__(self) -> None:
        self.data: list[tuple[bytes, int]] = []
        self.requests: list[aioice.stun.Message] = []

    def data_received(self, data: bytes, component: int) -> None:
        self.data.append((data, component))

    def request_received(self, message: aioice.stun.Message, *args: object) -> None:
        self.requests.append(message)


async def test_datagrams_are_demultiplexed_by_their_first_byte() -> None:
    """RFC 7983: RTP/RTCP skip aioice's STUN parser; STUN still reaches it."""
    assert aioice.ice.StunProtocol.datagram_received is bridge._demultiplexed_datagram_received
    receiver = _Receiver()
    protocol: Any = aioice.ice.StunProtocol(cast(Any, receiver))
    protocol.local_candidate = aioice.Candidate(
        foundation="x",
        component=1,
        transport="udp",
        priority=1,
        host="127.0.0.1",
        port=9,
        type="host",
    )
    # an RTP packet whose sequence number equals its length minus 20 is a valid STUN length
    rtp = struct.pack("!BBHII", 0x80, 96, 1100, 0, 1) + b"\x00" * 1108  # 1120 bytes
    rtcp = bytes([0x80, 201, 0, 1, 0, 0, 0, 1])
    protocol.datagram_received(rtp, ("127.0.0.1", 1))
    protocol.datagram_received(rtcp, ("127.0.0.1", 1))
    assert receiver.data == [(rtp, 1), (rtcp, 1)]
    request = aioice.stun.Message(
        message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST
    )
    protocol.datagram_received(bytes(request), ("127.0.0.1", 1))
    assert [m.transaction_id for m in receiver.requests] == [request.transaction_id]
    dtls_record = bytes([22, 0xFE, 0xFD]) + b"\x00" * 10
    protocol.datagram_received(dtls_record, ("127.0.0.1", 1))
    assert receiver.data[-1] == (dtls_record, 1)  # aioice's path: not STUN, so data


async def test_transceivers_are_built_inert_and_aiortc_keeps_its_classes() -> None:
    pc = bridge.ServerPeerConnection()
    try:
        transceiver = bridge.add_send_transceiver(pc, "video")
        receiver: Any = transceiver.receiver
        sender: Any = transceiver.sender
        assert type(receiver) is bridge._InertReceiver and type(sender) is bridge._InertSender
        # what aiortc's constructors would have allocated was never made
        assert not hasattr(receiver, "_RTCRtpReceiver__remote_bitrate_estimator")
        assert not hasattr(receiver, "_RTCRtpReceiver__jitter_buffer")
        assert not hasattr(sender, "_RTCRtpSender__rtp_history")
        # what aiortc's peer connection reads on them works
        assert receiver.transport is sender.transport is pc.media_transport.dtls  # type: ignore[union-attr]
        assert receiver.track is None and sender.track is None
        receiver._set_rtcp_ssrc(sender._ssrc)
        assert sender.kind == "video" and sender._track_id and sender._stream_id
        # the names were only lent for the call
        assert aiortc_rtcpeerconnection.RTCRtpReceiver is RTCRtpReceiver
        assert aiortc_rtcpeerconnection.RTCRtpSender is RTCRtpSender
    finally:
        await pc.close()


async def test_private_attributes_of_live_objects() -> None:
    pc = bridge.ServerPeerConnection()
    try:
        transceiver = bridge.add_send_transceiver(pc, "video")
        for name in (
            "_RTCPeerConnection__transceivers",
            "_RTCPeerConnection__iceTransports",
            "_RTCPeerConnection__pendingLocalDescription",
            "_RTCPeerConnection__currentLocalDescription",
            "_RTCPeerConnection__pendingRemoteDescription",
            "_RTCPeerConnection__currentRemoteDescription",
            "_RTCPeerConnection__signalingState",
        ):
            assert hasattr(pc, name), f"aiortc moved RTCPeerConnection.{name}"
        for name in ("_codecs", "_headerExtensions"):
            assert hasattr(transceiver, name), f"aiortc moved RTCRtpTransceiver.{name}"
        sender: RTCRtpSender = transceiver.sender
        for name in ("_ssrc", "_rtx_ssrc", "_stream_id", "_track_id"):
            assert hasattr(sender, name), f"aiortc moved RTCRtpSender.{name}"
        transport = pc.media_transport
        assert transport is not None
        dtls = transport.dtls
        assert hasattr(dtls, "_tx_srtp") and hasattr(dtls, "_rx_srtp") and hasattr(dtls, "_state")
        connection = dtls.transport._connection
        assert isinstance(connection, aioice.ice.Connection)
        assert hasattr(connection, "_nominated")
        for name in (  # what an ICE restart resets (begin_ice_restart)
            "_query_consent_task",
            "_check_list",
            "_check_list_done",
            "_check_list_state",
            "_early_checks",
            "_early_checks_done",
            "_nominating",
            "_remote_candidates",
            "_remote_candidates_end",
            "_local_username",
            "_local_password",
            "_queue",
            "_closing",  # a first connect taken over by a restart ends when it closes
        ):
            assert hasattr(connection, name), f"aioice moved Connection.{name}"
        ice = dtls.transport
        assert hasattr(ice, "_role_set") and hasattr(ice, "_RTCIceTransport__setState")
        assert hasattr(ice.iceGatherer, "_remote_candidates_end")
    finally:
        await pc.close()


def test_host_addresses_are_pinned_and_restored() -> None:
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]
    bridge.set_ice_host_addresses(["127.0.0.1", "::1"])
    assert aioice.ice.get_host_addresses(use_ipv4=False, use_ipv6=True) == ["::1"]
    bridge.set_ice_host_addresses([])
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)


async def _client_offers(client: RTCPeerConnection, server: bridge.ServerPeerConnection) -> None:
    await client.setLocalDescription(await client.createOffer())
    answer = await bridge.accept_offer(server, client.localDescription.sdp)
    await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))


async def _wait_connected(*pcs: RTCPeerConnection) -> None:
    for _ in range(200):
        if all(pc.connectionState == "connected" for pc in pcs):
            return
        await asyncio.sleep(0.025)
    raise AssertionError([pc.connectionState for pc in pcs])


async def test_rtp_is_taken_off_the_transport_and_nothing_decodes() -> None:
    threads_before = threading.active_count()
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    received: list[bytes] = []
    server.on_media_transport = lambda t: setattr(t, "on_rtp", lambda d, now: received.append(d))
    try:
        client.addTrack(VideoStreamTrack())
        await _client_offers(client, server)
        await _wait_connected(client, server)
        for _ in range(100):
            if len(received) >= 5:
                break
            await asyncio.sleep(0.02)
        assert len(received) >= 5, "no decrypted RTP reached the hook"
        # SRTP bypasses aioice's receive queue (taken in the socket callback)
        assert server.media_transport is not None
        assert server.media_transport._connection._queue.qsize() == 0
        assert all(128 <= p[0] < 192 for p in received)
        receiver = server.getTransceivers()[0].receiver
        assert type(receiver).__name__ == "_InertReceiver"
        # the client's own encoder thread pool may add threads; the server adds no decoder thread
        names = {t.name for t in threading.enumerate()}
        assert not any(name.endswith("-decoder") for name in names), names
        assert threading.active_count() <= threads_before + 4
    finally:
        await client.close()
        await server.close()


async def test_forwarded_packets_reach_the_client() -> None:
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        client.addTransceiver("audio", direction="recvonly")
        await _client_offers(client, server)
        await _wait_connected(client, server)
        transport = server.media_transport
        assert transport is not None and transport.connected
        sent_before = transport.packets_sent
        transport.send_rtcp(bytes([0x80, 201, 0, 1, 0, 0, 0, 1]))  # an empty RR
        assert transport.packets_sent == sent_before + 1
    finally:
        await client.close()
        await server.close()


async def test_rewritten_packets_reach_the_client_and_close_releases_the_socket() -> None:
    """The egress path writes through a duplicated socket descriptor; close must release it."""
    fds_before = len(os.listdir("/proc/self/fd"))
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    received: list[bytes] = []
    try:
        client.addTransceiver("video", direction="recvonly")
        await _client_offers(client, server)
        await _wait_connected(client, server)
        client_dtls: Any = client.getTransceivers()[0].receiver.transport
        handle_rtp = client_dtls._handle_rtp_data

        async def tap(data: bytes, arrival_time_ms: int) -> None:
            received.append(data)
            await handle_rtp(data, arrival_time_ms)

        client_dtls._handle_rtp_data = tap
        transport = server.media_transport
        assert transport is not None
        original = struct.pack("!BBHII", 0x80, 0x80 | 96, 7, 9000, 0x1111) + b"\x55" * 300
        transport.send_rewritten(original, 12, 100, 500, 123, 0xBEEF, MID_BLOCK, -1, b"")
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.01)
        assert received == [rewrite(original, 12, 100, 500, 123, 0xBEEF, MID_BLOCK)]
        assert transport.send_errors == 0
    finally:
        await client.close()
        await server.close()
    assert len(os.listdir("/proc/self/fd")) <= fds_before


async def test_glare_rollback_then_answer_connects() -> None:
    """The server's first offer crosses the client's: rolled back, the client's offer wins."""
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = bridge.add_send_transceiver(server, "video")
        vp8 = Codec(payload_type=97, name="VP8", clock_rate=90000, rtx_payload_type=98)
        await bridge.create_offer(server, {transceiver: vp8})
        assert server.signalingState == "have-local-offer"
        client.addTrack(VideoStreamTrack())
        await client.setLocalDescription(await client.createOffer())
        removed = bridge.rollback_local_offer(server)
        assert removed == [transceiver]
        assert server.signalingState == "stable"
        assert server.getTransceivers() == []
        answer = await bridge.accept_offer(server, client.localDescription.sdp)
        await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await _wait_connected(client, server)
    finally:
        await client.close()
        await server.close()


async def test_renegotiation_keeps_payload_types_and_extension_ids() -> None:
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        client.addTrack(VideoStreamTrack())
        offer = await client.createOffer()
        # a client whose payload types differ from aiortc's defaults (as browsers' do)
        sdp = offer.sdp.replace(" 97", " 120").replace(":97 ", ":120 ").replace("=97", "=120")
        answer = await bridge.accept_offer(server, sdp)
        assert "VP8/90000" in answer
        published = server.getTransceivers()[0]
        vp8_pt = published._codecs[0].payloadType
        assert vp8_pt == 120
        new = bridge.add_send_transceiver(server, "video")
        codec = Codec(payload_type=97, name="VP8", clock_rate=90000, rtx_payload_type=98)
        reoffer = await bridge.create_offer(server, {new: codec})
        sections = reoffer.split("m=video")[1:]
        assert len(sections) == 2
        assert sections[0].split("\r\n")[0].split()[2] == "120"  # unchanged on the old m-line
        assert sections[1].split("\r\n")[0].split()[2] == "120"  # VP8 keeps its session PT
        assert " 98 " not in sections[1].split("\r\n")[0] or "apt=120" in sections[1]
    finally:
        await client.close()
        await server.close()


async def test_the_dtls_role_comes_from_the_bundle_tagged_m_line() -> None:
    """Firefox, answering a server offer made while its DTLS handshake was under way, said
    setup:passive in the tagged m-line and setup:active in the new ones; aiortc took the last
    and turned DTLS server mid-handshake (swapped SRTP keys: nothing authenticated)."""
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        client.addTrack(VideoStreamTrack())
        await _client_offers(client, server)
        # the role the handshake and the SRTP keys use (getLocalParameters() says "auto")
        transport = server.getTransceivers()[0].receiver.transport
        assert transport._role == "client"  # it answered setup:active
        new = bridge.add_send_transceiver(server, "video")
        vp8 = Codec(payload_type=97, name="VP8", clock_rate=90000, rtx_payload_type=98)
        offer = await bridge.create_offer(server, {new: vp8})
        await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await client.setLocalDescription(await client.createAnswer())
        tagged, added = client.localDescription.sdp.split("m=video")[1:]
        assert "a=setup:passive" in tagged and "a=setup:passive" in added
        answer = client.localDescription.sdp.replace(added, added.replace("passive", "active"))
        await bridge.accept_answer(server, answer)
        assert transport._role == "client"
    finally:
        await client.close()
        await server.close()


def test_stun_module_still_has_transaction_error() -> None:
    assert issubclass(aioice.stun.TransactionError, Exception)


async def test_opus_answer_declares_in_band_fec() -> None:
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        client.addTransceiver("audio", direction="sendonly")
        await client.setLocalDescription(await client.createOffer())
        answer = await bridge.accept_offer(server, client.localDescription.sdp)
        opus_pt = next(
            line.split()[0].split(":")[1]
            for line in answer.splitlines()
            if line.startswith("a=rtpmap:") and "opus/48000" in line
        )
        assert f"a=fmtp:{opus_pt} minptime=10;useinbandfec=1" in answer
    finally:
        await client.close()
        await server.close()


RMEM_MAX = int(Path("/proc/sys/net/core/rmem_max").read_text())


async def test_media_sockets_get_the_receive_buffer_asked_for() -> None:
    asked = 1024 * 1024
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        granted = bridge.set_udp_receive_buffer(asked)
        assert granted == min(asked, RMEM_MAX)
        client.addTransceiver("audio", direction="recvonly")
        await _client_offers(client, server)
        await _wait_connected(client, server)
        assert server.media_transport is not None
        pair = server.media_transport._connection._nominated[1]
        sock = pair.protocol.transport.get_extra_info("socket")
        # Linux reports twice the size it granted (its bookkeeping overhead included)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2 == granted
    finally:
        bridge.set_udp_receive_buffer(262144)  # aioice's own default, for the other tests
        await client.close()
        await server.close()


async def test_dtls_keeps_aiortc_certificate_and_offers_rsa_suites_too() -> None:
    """aiortc builds each DTLS context from its peer connection's one certificate."""
    plain: Any = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    certificates = plain._RTCPeerConnection__certificates
    assert len(certificates) == 1 and type(certificates[0]) is RTCCertificate
    assert hasattr(certificates[0], "_key") and hasattr(certificates[0], "_cert")
    assert list(inspect.signature(RTCCertificate._create_ssl_context).parameters) == [
        "self",
        "srtp_profiles",
    ]
    await plain.close()
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        client.addTransceiver("audio", direction="recvonly")
        await _client_offers(client, server)
        await _wait_connected(client, server)
        assert server.media_transport is not None
        dtls: Any = server.media_transport.dtls
        assert type(dtls._RTCDtlsTransport__local_certificate) is bridge._ServerCertificate
        offered = [c for c in dtls._ssl.get_cipher_list() if not c.startswith("TLS_")]  # 1.3
        assert offered == bridge.DTLS_CIPHER_SUITES.decode().split(":")
        assert "ECDHE-RSA-AES128-GCM-SHA256" in offered
        # the certificate is still aiortc's ECDSA one: an ECDSA peer negotiates as before
        key = dtls._ssl.get_certificate(as_cryptography=True).public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert dtls._ssl.get_cipher_name().startswith("ECDHE-ECDSA-")
    finally:
        await client.close()
        await server.close()


async def _subscriber_with_m_lines(count: int) -> tuple[bridge.ServerPeerConnection, Any]:
    """A server connection that sent ``count`` m-lines (audio and video) and got the answer."""
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    opus = Codec(payload_type=111, name="opus", clock_rate=48000, channels=2)
    vp8 = Codec(
        payload_type=97,
        name="VP8",
        clock_rate=90000,
        rtx_payload_type=98,
        feedback=("nack", "nack pli", "goog-remb"),
    )
    codecs = {}
    for i in range(count):
        kind: Any = "audio" if i % 2 == 0 else "video"
        codecs[bridge.add_send_transceiver(server, kind)] = opus if kind == "audio" else vp8
    offer = await bridge.create_offer(server, codecs)
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    await client.setLocalDescription(await client.createAnswer())
    await bridge.accept_answer(server, client.localDescription.sdp)
    return server, client


async def test_media_params_reads_the_applied_description_without_parsing_sdp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading one m-line's parameters printed and re-parsed the whole remote SDP: an answer
    with m m-lines cost m parses of m m-lines (240 ms of blocked loop at 56, 1 s at 112)."""
    server, client = await _subscriber_with_m_lines(8)
    try:
        parse = aiortc_sdp.SessionDescription.parse
        calls: list[str] = []

        def counting_parse(sdp: str) -> Any:
            calls.append(sdp)
            return parse(sdp)

        monkeypatch.setattr(aiortc_sdp.SessionDescription, "parse", staticmethod(counting_parse))
        params = [bridge.media_params(server, t) for t in server.getTransceivers()]
        assert calls == []
        assert [p.kind for p in params] == ["audio", "video"] * 4
        # what the answer said about each m-line is still read: its mid and codecs
        assert [p.mid for p in params] == [t.mid for t in server.getTransceivers()]
        assert all(p.primary is not None for p in params)
    finally:
        await client.close()
        await server.close()


async def test_kept_descriptions_share_what_their_m_lines_have_equal() -> None:
    """Each m-line of a kept description owned copies of the BUNDLE transport's parameters and
    of its kind's codecs (~KBs per m-line, per description); and the offer before an answered
    one was kept whole for a rollback that could no longer happen."""
    server, client = await _subscriber_with_m_lines(8)
    try:
        assert server.before_offer is None
        private: Any = server
        for name in bridge._KEPT_DESCRIPTIONS:
            assert hasattr(private, name), f"aiortc moved RTCPeerConnection.{name}"
        remote_dtls = private._RTCPeerConnection__remoteDtls
        remote_ice = private._RTCPeerConnection__remoteIce
        assert len(remote_dtls) == len(remote_ice) == 8
        assert len({id(v) for v in remote_dtls.values()}) == 1
        assert len({id(v) for v in remote_ice.values()}) == 1
        transceivers = server.getTransceivers()
        assert len({id(t._codecs) for t in transceivers}) == 2  # audio, video
        assert len({id(t._headerExtensions) for t in transceivers}) == 2
        kept = [
            private._RTCPeerConnection__pendingLocalDescription,
            private._RTCPeerConnection__currentRemoteDescription,
        ]
        for description in kept:
            media = description.media
            assert len(media) == 8
            assert len({id(m.dtls) for m in media}) == len({id(m.ice) for m in media}) == 1
            for values in (
                [m.ice_candidates for m in media],  # the first m-line's, or every m-line's
                [m.rtp.codecs for m in media],  # audio, video
                [m.rtp.headerExtensions for m in media],
            ):
                distinct: list[Any] = []
                for value in values:
                    if value not in distinct:
                        distinct.append(value)
                assert len({id(v) for v in values}) == len(distinct) <= 2
        # sharing changes no value: a description parsed from the same text prints the same
        local = kept[0]
        fresh = aiortc_sdp.SessionDescription.parse(str(local))
        fresh.type = local.type
        text = str(fresh)
        private._RTCPeerConnection__pendingLocalDescription = fresh
        bridge.compact_descriptions(server)
        assert str(fresh) == text == str(local)
        assert len({id(m.dtls) for m in fresh.media}) == 1
        # the connection still negotiates: one more m-line offered and answered
        new = bridge.add_send_transceiver(server, "video")
        vp8 = Codec(payload_type=97, name="VP8", clock_rate=90000, rtx_payload_type=98)
        offer = await bridge.create_offer(server, {new: vp8})
        assert offer.count("m=") == 9
        await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await client.setLocalDescription(await client.createAnswer())
        await bridge.accept_answer(server, client.localDescription.sdp)
        assert bridge.media_params(server, new).primary is not None
    finally:
        await client.close()
        await server.close()


async def test_simulcast_is_added_by_the_bridge_for_the_server_connection_only() -> None:
    """aiortc drops a=rid/a=simulcast and negotiates no rid header extension: the bridge adds
    both (sfu.media.sdp_simulcast), on the transceivers of the server's connection only, after
    each remote description (aiortc recomputes ``_headerExtensions`` from its module list).
    If aiortc learns simulcast, these fail: the bridge would then write the lines twice."""
    own_list = {kind: list(extensions) for kind, extensions in HEADER_EXTENSIONS.items()}
    assert URI_RID not in {e.uri for extensions in own_list.values() for e in extensions}
    parsed = aiortc_sdp.SessionDescription.parse(CHROMIUM)
    assert "a=rid:" not in str(parsed) and "a=simulcast:" not in str(parsed)
    assert not hasattr(parsed.media[1], "rid") and not hasattr(parsed.media[1], "simulcast")
    assert hasattr(aiortc_rtcpeerconnection, "find_common_header_extensions")
    server = bridge.ServerPeerConnection()
    plain = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        answer = await bridge.accept_offer(server, CHROMIUM)
        assert "a=simulcast:recv q;h;f" in answer and f"a=extmap:10 {URI_RID}" in answer
        camera = server.getTransceivers()[1]
        assert {e.uri for e in camera._headerExtensions} >= {URI_RID, URI_REPAIRED_RID}
        # aiortc's module list is untouched, and another aiortc peer negotiates as before
        assert {kind: list(e) for kind, e in HEADER_EXTENSIONS.items()} == own_list
        await plain.setRemoteDescription(RTCSessionDescription(CHROMIUM, "offer"))
        plain_camera = plain.getTransceivers()[1]
        assert URI_RID not in {e.uri for e in plain_camera._headerExtensions}
        await plain.setLocalDescription(await plain.createAnswer())
        assert URI_RID not in plain.localDescription.sdp
        assert "a=simulcast" not in plain.localDescription.sdp
        # what each remote description leaves on a transceiver is aiortc's list only
        await server.setRemoteDescription(RTCSessionDescription(CHROMIUM, "offer"))
        assert URI_RID not in {e.uri for e in server.getTransceivers()[1]._headerExtensions}
    finally:
        await plain.close()
        await server.close()


async def test_transport_cc_kept_in_the_servers_answers_and_offers() -> None:
    """aiortc negotiates neither the transport-wide sequence number nor the transport-cc
    feedback (its module lists lack both) and drops them on every remote description: the bridge
    keeps them where the client offered or answered them. If aiortc learns transport-cc, the
    first assertions fail: the bridge would then add them twice."""
    assert URI_TRANSPORT_CC not in {e.uri for x in HEADER_EXTENSIONS.values() for e in x}
    server = bridge.ServerPeerConnection()
    try:
        answer = await bridge.accept_offer(server, CHROMIUM)
        # Chromium's publishing m-lines: the server's feedback lets its own estimator run
        assert f"a=extmap:3 {URI_TRANSPORT_CC}" in answer
        assert "a=rtcp-fb:96 transport-cc" in answer
        camera = bridge.media_params(server, server.getTransceivers()[1])
        assert camera.extensions[URI_TRANSPORT_CC] == 3
        assert TRANSPORT_CC in camera.codecs[0].feedback
        # what the server offers a subscriber has both, with an id free on the transport
        transceiver = bridge.add_send_transceiver(server, "video")
        offer = await bridge.create_offer(server, {transceiver: camera.codecs[0]})
        mline = offer[offer.index(f"a=mid:{transceiver.mid}") :]
        assert f"a=extmap:3 {URI_TRANSPORT_CC}" in offer
        assert "transport-cc" in mline
    finally:
        await server.close()


async def _connect_without_remote_candidates(patched: bool) -> tuple[bool, bool]:
    """A server-side aioice agent told end-of-candidates with no candidate, and a client agent
    that has the server's candidates and checks it (as a receive-only Chromium page hiding its
    host address behind mDNS does): whether each side connected."""
    server = aioice.ice.Connection(ice_controlling=True, components=1)
    client = aioice.ice.Connection(ice_controlling=False, components=1)
    if patched:
        bridge.await_peer_reflexive(server)
    try:
        await asyncio.gather(server.gather_candidates(), client.gather_candidates())
        server.remote_username, server.remote_password = (
            client.local_username,
            client.local_password,
        )
        client.remote_username, client.remote_password = (
            server.local_username,
            server.local_password,
        )
        for candidate in server.local_candidates:
            await client.add_remote_candidate(candidate)
        await client.add_remote_candidate(None)
        await server.add_remote_candidate(None)  # none: the client's checks must tell it
        results = await asyncio.wait_for(
            asyncio.gather(server.connect(), client.connect(), return_exceptions=True), 10.0
        )
        return results[0] is None, results[1] is None
    finally:
        await asyncio.gather(server.close(), client.close())


async def test_aioice_fails_at_once_without_remote_candidates() -> None:
    """The aioice behaviour await_peer_reflexive mends: if an upgrade fixes it, this says so."""
    server_connected, _ = await _connect_without_remote_candidates(patched=False)
    assert not server_connected, "aioice now waits for peer-reflexive candidates by itself"


async def test_a_peer_with_no_candidates_connects_by_its_checks() -> None:
    """RFC 8445 §7.3.1.3: the client's checks make a peer-reflexive candidate on the server."""
    assert await _connect_without_remote_candidates(patched=True) == (True, True)


async def test_aioice_receives_nothing_while_nothing_is_nominated() -> None:
    """Why begin_ice_restart replaces recvfrom: aioice's would end the DTLS transport's reader
    (and so the peer connection) in the moment between two ICE sessions."""
    connection = aioice.ice.Connection(ice_controlling=False)
    with pytest.raises(ConnectionError, match="not connected"):
        await connection.recvfrom()


async def test_ice_restart_keeps_dtls_and_moves_the_egress() -> None:
    """RFC 8445 §9: the client's offer with new credentials restarts ICE on both sides; DTLS,
    SRTP and the server's egress (its transport-wide numbering) carry on over the new pair."""
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    outcomes: list[bool] = []
    server.on_ice_restart = outcomes.append
    empty_rr = bytes([0x80, 201, 0, 1, 0, 0, 0, 1])
    try:
        client.addTransceiver("audio", direction="recvonly")
        await _client_offers(client, server)
        await _wait_connected(client, server)
        transport = server.media_transport
        assert transport is not None
        transport.send_rtcp(empty_rr)  # opens the egress
        egress, dtls = transport._egress, transport.dtls
        first = bridge.ice_credentials(client.localDescription.sdp)
        assert not bridge.ice_restart_offered(server, client.localDescription.sdp)

        bridge.begin_ice_restart(client, controlling=True)
        await client.setLocalDescription(await client.createOffer())
        offered = bridge.ice_credentials(client.localDescription.sdp)
        assert offered is not None and offered != first
        assert bridge.ice_restart_offered(server, client.localDescription.sdp)
        answer = await bridge.accept_offer(server, client.localDescription.sdp)
        remote = bridge.ice_credentials(answer)
        assert remote is not None
        await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await bridge.complete_ice_restart(client, remote)
        for _ in range(200):
            if outcomes:
                break
            await asyncio.sleep(0.025)
        assert outcomes == [True] and server.ice_restarts == 1

        assert (client.connectionState, server.connectionState) == ("connected", "connected")
        assert transport.dtls is dtls and dtls.state == "connected"
        connection: Any = cast(Any, dtls.transport)._connection
        assert (connection.remote_username, connection.remote_password) == offered
        assert "sendto" not in vars(connection) and "recvfrom" not in vars(connection)
        sent = transport.packets_sent
        transport.send_rtcp(empty_rr)
        assert transport._egress is egress and transport.packets_sent == sent + 1
        # the next offer with the same credentials is no restart
        assert not bridge.ice_restart_offered(server, client.localDescription.sdp)
    finally:
        await client.close()
        await server.close()


async def test_aioice_waits_forever_when_a_restart_replaces_its_check_list() -> None:
    """Why own_ice_connect exists: aiortc starts ICE once and awaits aioice's ``connect``,
    which waits on the check-list queue of the session it began with; begin_ice_restart
    replaces it, and that connect would never return."""
    source = inspect.getsource(aioice.ice.Connection.connect)
    assert "await self._check_list_state.get()" in source, "aioice's connect changed"
    start = inspect.getsource(aiortc_rtcicetransport.RTCIceTransport.start)
    assert "await self._connection.connect()" in start, "aiortc's ICE start changed"


async def test_a_restart_takes_over_a_first_connection_that_is_not_up() -> None:
    """RFC 8445 §9 before the first pair: the client's packets go nowhere, so its first
    connection cannot come up; an ICE restart then takes over both sides' first connect (aiortc's
    start returns with the restart), and DTLS comes up on the new session's pair."""
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    outcomes: list[bool] = []
    server.on_ice_restart = outcomes.append
    try:
        client.addTransceiver("audio", direction="recvonly")
        await client.setLocalDescription(await client.createOffer())
        connection: Any = cast(Any, client.getTransceivers()[0].receiver.transport).transport
        connection = connection._connection
        sends = [(p, p.transport.sendto) for p in connection._protocols]
        for protocol, _ in sends:  # a dead network: nothing leaves the client
            protocol.transport.sendto = lambda data, addr=None: None
        answer = await bridge.accept_offer(server, client.localDescription.sdp)
        bridge.own_ice_connect(client)
        await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        for _ in range(100):  # aiortc's start is running ours
            if getattr(connection, "_first_connect", None) is not None:
                break
            await asyncio.sleep(0.01)
        assert connection._first_connect is not None
        await asyncio.sleep(0.3)
        assert client.connectionState == "connecting" and server.connectionState != "connected"

        bridge.begin_ice_restart(client, controlling=True)
        await client.setLocalDescription(await client.createOffer())
        answer = await bridge.accept_offer(server, client.localDescription.sdp)
        await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        for protocol, sendto in sends:
            protocol.transport.sendto = sendto
        remote = bridge.ice_credentials(answer)
        assert remote is not None
        await bridge.complete_ice_restart(client, remote)
        await _wait_connected(client, server)
        assert outcomes == [True]
        assert "connect" not in vars(connection) and connection._first_connect is None
    finally:
        await client.close()
        await server.close()


async def test_internals_of_the_shared_udp_port_still_exist() -> None:
    """What sfu.media.aiortc_udp_port (the bridge's shared port, issue 13) relies on."""
    stun_protocol = aioice.ice.StunProtocol
    connection_class = aioice.ice.Connection
    # the hook that puts a marked connection's host candidates on the shared sockets
    assert connection_class.get_component_candidates is bridge._get_component_candidates
    original = bridge._aioice_get_component_candidates
    assert list(inspect.signature(original).parameters) == [
        "self",
        "component",
        "addresses",
        "timeout",
    ]
    assert "self.get_component_candidates(" in inspect.getsource(connection_class.gather_candidates)
    assert "self._protocols += host_protocols" in inspect.getsource(original)
    assert aioice.ice.TransportPolicy.ALL.name == "ALL"
    assert isinstance(aioice.turn.UDP_SOCKET_BUFFER_SIZE, int)
    # _MuxedStunProtocol's overrides keep aioice's signatures
    assert list(inspect.signature(stun_protocol.request).parameters) == [
        "self",
        "request",
        "addr",
        "integrity_key",
        "retransmissions",
    ]
    assert list(inspect.signature(stun_protocol.send_stun).parameters) == [
        "self",
        "message",
        "addr",
    ]
    assert inspect.iscoroutinefunction(stun_protocol.close)
    assert "self.receiver.protocol_lost(self)" in inspect.getsource(stun_protocol.connection_lost)
    # a Binding success response is sent only after USERNAME and MESSAGE-INTEGRITY passed: the
    # port learns the address from it
    received = inspect.getsource(connection_class.request_received)
    assert received.index("check_message_integrity") < received.index("protocol.send_stun(")
    # checks are signed with the peer's password, and a response not signed with it is dropped:
    # a success returned by request() is authenticated
    assert "integrity_key=self.remote_password" in inspect.getsource(connection_class.check_start)
    responded = inspect.getsource(aioice.stun.Transaction.response_received)
    assert "if not self.__authenticated(message, self.__integrity_key):" in responded
    assert "check_message_integrity" in inspect.getsource(aioice.stun.Transaction)
    assert list(inspect.signature(aioice.stun.Transaction.response_received).parameters) == [
        "self",
        "message",
        "addr",
    ]
    # Connection.close closes every protocol of _protocols (ours only unregister)
    assert "await protocol.close()" in inspect.getsource(connection_class.close)
    # aiortc writes the ICE parameters from the connection's ufrag, after we set it
    parameters = inspect.getsource(aiortc_rtcicetransport.RTCIceGatherer.getLocalParameters)
    assert "self._connection.local_username" in parameters
    assert "return self._local_username" in inspect.getsource(
        cast(Any, connection_class.local_username).fget
    )
    # on a live connection and protocol
    connection = connection_class(ice_controlling=False, components=1)
    protocol = stun_protocol(connection)
    for name in ("receiver", "transactions", "_StunProtocol__closed"):
        assert hasattr(protocol, name), f"aioice moved StunProtocol.{name}"
    for name in ("_protocols", "_transport_policy", "_local_username", "_closing"):
        assert hasattr(connection, name), f"aioice moved Connection.{name}"
    assert "_protocols" in vars(connection) and isinstance(connection._protocols, list)
    await connection.close()
    pc = bridge.ServerPeerConnection()
    try:  # aiortc's connections have one component (RTCP muxed): the one the port routes
        bridge.add_send_transceiver(pc, "audio")
        transport = pc.media_transport
        assert transport is not None
        assert cast(Any, transport.dtls.transport)._connection._components == {1}
    finally:
        await pc.close()
