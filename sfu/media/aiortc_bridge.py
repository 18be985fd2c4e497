"""The one module that touches aiortc/aioice internals (pinned: aiortc 1.16.0, aioice 0.13.0).

aiortc is a WebRTC endpoint: it decodes what it receives and encodes what it sends. The SFU keeps
its ICE, DTLS and SDP handling and takes over the media plane:

* every RTP receiver and sender aiortc creates is made inert (no decoder thread, no encoder, no
  RTCP task) the moment it is created;
* SRTP is taken straight from aioice's socket callback and decrypted there, and forwarded
  packets are assembled, protected and written to the nominated ICE pair's socket in one C call
  (sfu.media.srtp) — no queue, no await, no Python frame or bytes object per copy;
* offers keep payload types and header-extension ids stable across renegotiation (JSEP §5.2.2),
  and a local offer can be rolled back (JSEP §5.7), which aiortc does not implement;
* DTLS also offers the ECDHE-RSA suites, so peers with an RSA certificate connect;
* simulcast a client sends is negotiated (RFC 8851, RFC 8853, sfu.media.sdp_simulcast): aiortc
  drops a=rid and a=simulcast lines and negotiates no rid header extension, so the server adds
  both to its answers and offers itself; the rid header extensions are negotiated on every video
  m-line, so that any new m-line of the BUNDLE can be simulcast (see :func:`keep_rid_extensions`).
* optionally (:func:`use_udp_port`), every server peer connection shares one UDP socket per ICE
  host address, demultiplexed by ufrag, transaction and authenticated address: that part of
  the bridge is :mod:`sfu.media.aiortc_udp_port`, which only this module imports.

tests/unit/test_aiortc_bridge.py fails loudly when an upgrade moves one of these internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast, get_args

import aioice.ice
import aioice.turn
import aioice.utils
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc import rtcpeerconnection as aiortc_rtcpeerconnection
from aiortc import sdp as aiortc_sdp
from aiortc.codecs import CODECS
from aiortc.rtcdtlstransport import (
    RTCCertificate,
    RTCDtlsTransport,
    SRTPProtectionProfile,
    State,
)
from aiortc.rtcrtpparameters import (
    RTCRtcpFeedback,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
)
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from OpenSSL import SSL

from sfu.api import Kind
from sfu.bwe.feedback import EgressFeedback, FeedbackSummary
from sfu.config import IceServer
from sfu.media import sdp_check, sdp_simulcast
from sfu.media.aiortc_udp_port import UdpPort, Unroutable, _MuxedStunProtocol
from sfu.media.candidate import InvalidValue, parse_candidate, show
from sfu.media.params import (
    TRANSPORT_CC,
    URI_REPAIRED_RID,
    URI_RID,
    URI_TRANSPORT_CC,
    Codec,
    MediaParams,
)
from sfu.media.playout_delay import URI_PLAYOUT_DELAY
from sfu.media.sdp_simulcast import Layer
from sfu.media.srtp import Egress, SendBatch, SrtpSession, forget_stream, srtp_session

# --- ICE host addresses ---

_default_get_host_addresses = aioice.ice.get_host_addresses
_pinned_hosts: tuple[str, ...] = ()


def _pinned_get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return [host for host in _pinned_hosts if (use_ipv6 if ":" in host else use_ipv4)]


def set_ice_host_addresses(hosts: Sequence[str]) -> None:
    """Gather ICE host candidates only on ``hosts`` (process-wide); empty restores the default.

    aioice has no option for this and skips 127.0.0.1, which loopback tests need.
    """
    global _pinned_hosts
    _pinned_hosts = tuple(hosts)
    aioice.ice.get_host_addresses = (
        _pinned_get_host_addresses if _pinned_hosts else _default_get_host_addresses
    )


# --- socket receive buffers ---


def set_udp_receive_buffer(size: int) -> int:
    """Ask for ``size`` bytes of receive buffer on every ICE socket made from now on.

    aioice sets SO_RCVBUF on its host and TURN sockets from one module constant (256 KiB).
    Returns what the kernel grants (Linux caps the request at net.core.rmem_max and reports
    twice the size, its bookkeeping included), so a caller can warn when it is less.
    """
    aioice.turn.UDP_SOCKET_BUFFER_SIZE = size
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return int(probe.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)) // 2


# --- demultiplexing datagrams ---

_stun_datagram_received = aioice.ice.StunProtocol.datagram_received


def _demultiplexed_datagram_received(
    protocol: aioice.ice.StunProtocol, data: bytes | str, addr: tuple[Any, ...]
) -> None:
    """RTP and RTCP straight to the connection; everything else to aioice (RFC 7983 §7).

    aioice tries to parse every datagram as STUN and hands it on when that raises: an exception
    per media packet, and an RTP packet whose sequence number happens to equal its length minus
    20 can pass for STUN and be lost. A first byte in 128..191 is RTP or RTCP, never STUN (0..3).
    """
    packet = cast(bytes, data)
    if packet and 127 < packet[0] < 192:
        protocol.receiver.data_received(packet, protocol.local_candidate.component)
    else:
        _stun_datagram_received(protocol, data, addr)


# process-wide, for every aioice connection: the same outcome as aioice's own, without the raise
aioice.ice.StunProtocol.datagram_received = _demultiplexed_datagram_received  # type: ignore[method-assign,assignment]


# --- one UDP port for every server peer connection (issue 13; sfu.media.aiortc_udp_port) ---

_udp_port: UdpPort | None = None


async def use_udp_port(hosts: Sequence[str] | None = None, port: int = 0) -> UdpPort:
    """From now on, every :class:`ServerPeerConnection` gathers its host candidates on one
    shared socket per address of ``hosts`` (default: the ICE host addresses aioice would use),
    bound to ``port`` (0: ephemeral). Client-side peer connections keep their own sockets, and
    connections made before keep theirs. Off unless called; :func:`stop_udp_port` ends it.
    """
    global _udp_port
    if _udp_port is not None:
        raise RuntimeError("a UDP port is in use already")
    if hosts is None:
        hosts = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)
    _udp_port = await UdpPort.open(hosts, port)
    return _udp_port


def stop_udp_port() -> None:
    """Close the port of :func:`use_udp_port`; new server connections get sockets of their own."""
    global _udp_port
    if _udp_port is not None:
        _udp_port.close()
        _udp_port = None


#: what :func:`udp_port_unroutable` counts, in the order the metric lists them
UNROUTABLE_KINDS: tuple[Unroutable, ...] = get_args(Unroutable)


def udp_port_unroutable() -> Mapping[str, int] | None:
    """Datagrams the port of :func:`use_udp_port` dropped because no connection was theirs, by
    kind (``stun``, ``media``, ``other``); None when no port is in use."""
    if _udp_port is None:
        return None
    return {kind: _udp_port.unroutable[kind] for kind in UNROUTABLE_KINDS}


def udp_port_io() -> tuple[int, int, int, int] | None:
    """(recvmmsg calls, datagrams they read, sendmmsg calls, datagrams they sent) of the port
    of :func:`use_udp_port`; None when no port is in use."""
    if _udp_port is None:
        return None
    readers = [shared.reader for shared in _udp_port.sockets]
    batch = _udp_port.batch
    return (
        sum(r.reads for r in readers),
        sum(r.datagrams for r in readers),
        batch.flushes,
        batch.batched,
    )


_aioice_get_component_candidates = aioice.ice.Connection.get_component_candidates


async def _get_component_candidates(
    connection: aioice.ice.Connection,
    component: int,
    addresses: list[str],
    timeout: int = 5,  # noqa: ASYNC109
) -> list[aioice.Candidate]:
    """aioice's gathering, except that a connection a :class:`ServerPeerConnection` put on the
    shared port gets its host candidates there (one muxed protocol per shared socket) instead
    of binding sockets of its own; server-reflexive and relayed gathering is aioice's."""
    port: UdpPort | None = vars(connection).get("_sfu_udp_port")
    # aiortc muxes RTCP (RFC 5761): one component, which the port routes; a port stopped since
    # the connection was made leaves it sockets of its own, as before
    if port is None or port.closed or component != 1:
        return await _aioice_get_component_candidates(connection, component, addresses, timeout)
    candidates = []
    private: Any = connection
    if private._transport_policy == aioice.ice.TransportPolicy.ALL:  # not relay-only
        candidates = port.join(connection, component)
    candidates += await _aioice_get_component_candidates(connection, component, [], timeout)
    return candidates


# process-wide, for every aioice connection: unmarked ones gather as aioice does
aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign,assignment]


# --- DTLS certificates and cipher suites ---

#: DTLS 1.2 suites, ECDHE only (forward secrecy) with AEAD or CBC-SHA, as libwebrtc offers them,
#: for both certificate kinds: aiortc offers ECDSA suites only. See :class:`_ServerCertificate`.
DTLS_CIPHER_SUITES = b":".join(
    f"ECDHE-{auth}-{cipher}".encode()
    for cipher in (
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "CHACHA20-POLY1305",
        "AES128-SHA",
        "AES256-SHA",
    )
    for auth in ("ECDSA", "RSA")
)


class _ServerCertificate(RTCCertificate):
    """aiortc's ECDSA certificate, with cipher suites that also let RSA-certificate peers in.

    In (D)TLS 1.2 a suite names the authentication of the *DTLS server*'s certificate
    (RFC 5246 §7.4.2, RFC 8422 §2). The answerer picks the DTLS role (RFC 5763 §5): when a
    peer offers ``actpass`` the server answers ``active`` and is the DTLS client, so the peer's
    certificate decides — an RSA one (GStreamer's webrtcbin, other OpenSSL-based stacks) needs
    the ECDHE-RSA suites, which aiortc leaves out ("no shared cipher"). When the server offers
    and the peer answers ``active``, the server is the DTLS server: its ECDSA certificate picks
    an ECDHE-ECDSA suite, and the peer's RSA certificate only signs its CertificateVerify,
    which OpenSSL accepts as it is.
    """

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        context = super()._create_ssl_context(srtp_profiles)
        context.set_cipher_list(DTLS_CIPHER_SUITES)
        return context


# --- inert senders and receivers ---


class _InertReceiver(RTCRtpReceiver):
    """Receives nothing itself: the SFU reads RTP off the DTLS transport. No decoder thread.

    aiortc's constructor allocates a jitter buffer, a NACK generator, a bandwidth estimator
    (~400 kB for video), a decoder queue and events; none is used, so none is made. These are
    the attributes aiortc's peer connection reads on a receiver.
    """

    def __init__(self, kind: str, transport: RTCDtlsTransport) -> None:
        self._enabled = True
        self._track = None
        self._RTCRtpReceiver__kind = kind
        self._RTCRtpReceiver__transport = transport
        self._RTCRtpReceiver__rtcp_ssrc: int | None = None

    async def receive(self, parameters: Any) -> None:
        return None

    async def stop(self) -> None:
        return None

    def _handle_disconnect(self) -> None:
        return None


class _InertSender(RTCRtpSender):
    """Sends nothing itself: forwarded packets go through :class:`MediaTransport`. No encoder.

    Like :class:`_InertReceiver`, only what aiortc's peer connection reads on a sender is set.
    """

    def __init__(self, track_or_kind: Any, transport: RTCDtlsTransport) -> None:
        self._RTCRtpSender__kind = track_or_kind if isinstance(track_or_kind, str) else "none"
        self.replaceTrack(None)  # the SFU sends no track of its own
        self._ssrc = random.getrandbits(32)
        self._rtx_ssrc = random.getrandbits(32)
        self._stream_id = str(uuid.uuid4())
        self._enabled = True
        self._RTCRtpSender__transport = transport

    async def send(self, parameters: Any) -> None:
        return None

    async def stop(self) -> None:
        return None


RtpHandler = Callable[[bytes, float], None]
RtcpHandler = Callable[[bytes], None]
FeedbackHandler = Callable[[bytes, EgressFeedback, float], None]


#: Seconds between the pacer's drains while packets wait (sfu/media/_pacer.c).
PACE_INTERVAL = 0.005


class MediaTransport:
    """The SRTP path of one peer connection (max-bundle: a single DTLS transport).

    ``send_rewritten`` is the C egress's own method once DTLS is up (no Python frame per
    copy); before that, and after the transport closed, it is a method that opens the egress
    if it can and otherwise drops the packet.
    """

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self.dtls = dtls
        self._dtls: Any = cast(Any, dtls)
        self._connection: Any = cast(Any, dtls.transport)._connection
        self.on_rtp: RtpHandler = _ignore_rtp
        self.on_rtcp: RtcpHandler = _ignore_rtcp
        #: a lone transport-cc feedback message and its match (it never reaches on_rtcp)
        self.on_transport_feedback: FeedbackHandler = _ignore_feedback
        self.last_activity = time.monotonic()
        self.send_rewritten: Callable[..., None] = self._send_rewritten_unopened
        self.send_vp8: Callable[..., None] = self._send_vp8_unopened
        self._egress: Egress | None = None
        self._transport_cc_id = 0
        self._pacing_rate = 0
        self._unpaced: set[int] = set()
        self._drain_timer: asyncio.TimerHandle | None = None
        self._closed_counts = (0, 0, 0)  # packets, bytes, errors of egresses closed before
        self._rx: tuple[Any, SrtpSession] | None = None  # (pylibsrtp session, its C view)
        self._relayed_sends: set[asyncio.Future[None]] = set()
        self._dtls._handle_rtp_data = self._handle_rtp_data
        self._dtls._handle_rtcp_data = self._handle_rtcp_data
        dtls.on("statechange", self._on_dtls_state)
        # consent checks from the peer also prove it is alive
        stun_request_received = self._connection.request_received

        def request_received(*args: Any) -> None:
            self.last_activity = time.monotonic()
            stun_request_received(*args)

        self._connection.request_received = request_received
        await_peer_reflexive(self._connection)
        _own_first_connect(self._connection)  # an ICE restart may retry a first connection
        # SRTP straight from the socket callback: aioice would queue each datagram for the
        # DTLS transport's receive task (a task wake-up per packet); DTLS records still go there
        queue_datagram = self._connection.data_received
        dtls_state = self._dtls

        def data_received(data: bytes, component: int) -> None:
            session = dtls_state._rx_srtp
            if session is None or not data or not 127 < data[0] < 192:
                queue_datagram(data, component)
                return
            rx = self._rx
            if rx is None or rx[0] is not session:
                rx = self._rx = (session, srtp_session(session))
            self.last_activity = now = time.monotonic()
            if len(data) > 1 and 192 <= data[1] <= 208:  # RTCP (RFC 5761 §4)
                packet = rx[1].unprotect_rtcp(data)
                if packet is None:
                    return
                egress = self._egress
                # transport-cc feedback alone (20 a second from each subscriber): matched in C
                if egress is not None and data[1] == 205 and data[0] & 0x1F == 15:
                    raw = egress.lone_transport_feedback(packet)
                    if raw is not False:
                        if raw is not None:
                            self.on_transport_feedback(packet, raw, now)
                        return
                self.on_rtcp(packet)
            else:
                packet = rx[1].unprotect_rtp(data)
                if packet is not None:  # else not for this session, replayed, or forged
                    self.on_rtp(packet, now)

        self._connection.data_received = data_received

    @property
    def connected(self) -> bool:
        return bool(self._dtls._state is State.CONNECTED)

    @property
    def packets_sent(self) -> int:
        egress = self._egress
        return self._closed_counts[0] + (egress.packets_sent if egress else 0)

    @property
    def bytes_sent(self) -> int:
        egress = self._egress
        return self._closed_counts[1] + (egress.bytes_sent if egress else 0)

    @property
    def send_errors(self) -> int:
        """Packets the socket refused (buffer full), SRTP could not protect, or too big."""
        egress = self._egress
        return self._closed_counts[2] + (egress.send_errors if egress else 0)

    @property
    def transport_cc_id(self) -> int:
        """The transport-wide sequence number's extension id (0: not negotiated)."""
        return self._transport_cc_id

    @transport_cc_id.setter
    def transport_cc_id(self, ext_id: int) -> None:
        self._transport_cc_id = ext_id
        if self._egress is not None:
            self._egress.transport_cc_id = ext_id

    def transport_feedback(self, fci: bytes) -> FeedbackSummary | None:
        """One transport-cc feedback message matched against what this transport sent; None
        when malformed, or before anything was sent."""
        egress = self._egress
        raw = None if egress is None else egress.transport_feedback(fci)
        return None if raw is None else FeedbackSummary.from_egress(raw)

    @property
    def pacing_rate(self) -> int:
        """bit/s RTP leaves at, in bursts of a few ms (0: not paced); the rest is queued and
        drained by a timer every PACE_INTERVAL (sfu/media/_pacer.c)."""
        return self._pacing_rate

    @pacing_rate.setter
    def pacing_rate(self, bitrate: int) -> None:
        self._pacing_rate = bitrate
        if self._egress is not None:
            self._egress.pacing_rate = bitrate

    def unpace(self, payload_type: int) -> None:
        """Never pace this payload type (audio: small, and late audio is lost audio)."""
        self._unpaced.add(payload_type)
        if self._egress is not None:
            self._egress.unpace(payload_type)

    @property
    def pacer_counts(self) -> tuple[int, int]:
        """(packets that waited in the pacer, packets it dropped full) of the current egress."""
        egress = self._egress
        return (0, 0) if egress is None else (egress.paced, egress.pace_drops)

    def _arm_drain(self) -> None:
        if self._drain_timer is None:
            self._drain_timer = asyncio.get_running_loop().call_later(PACE_INTERVAL, self._drain)

    def _drain(self) -> None:
        self._drain_timer = None
        egress = self._egress
        if egress is not None and egress.drain():
            self._arm_drain()

    def set_probe_cluster(self, cluster: int) -> None:
        """Record packets sent from now on as probe cluster ``cluster``'s (-1: none)."""
        if self._egress is not None:
            self._egress.probe_cluster = cluster

    async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        self.last_activity = now = time.monotonic()
        self.on_rtp(data, now)

    async def _handle_rtcp_data(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self.on_rtcp(data)

    def forget_remote_ssrc(self, ssrc: int) -> None:
        """The SFU routes no packet of ``ssrc``: libsrtp need not keep a stream for it."""
        session = self._dtls._rx_srtp
        if session is not None:
            forget_stream(session, ssrc)

    def _send_rewritten_unopened(self, *args: Any) -> None:
        egress = self._open_egress()
        if egress is not None:
            egress.send_rewritten(*args)

    def _send_vp8_unopened(self, *args: Any) -> None:
        egress = self._open_egress()
        if egress is not None:
            egress.send_vp8(*args)

    def send_rtp(self, packet: bytes) -> None:
        """Protect and send one RTP packet now; dropped silently when not connected."""
        egress = self._egress or self._open_egress()
        if egress is not None:
            egress.send_rtp(packet)

    def send_rtcp(self, packet: bytes) -> None:
        egress = self._egress or self._open_egress()
        if egress is not None:
            egress.send_rtcp(packet)

    def _open_egress(self) -> Egress | None:
        """The egress to the nominated pair, once DTLS is up."""
        if self._egress is not None:
            return self._egress
        session = self._dtls._tx_srtp
        if session is None or self._dtls._state is not State.CONNECTED:
            return None
        target = self._target()
        if target is None:
            return None
        try:
            egress = Egress(srtp_session(session), *target)
        except ValueError:  # not a numeric address: nothing can be sent to it
            if target[0] >= 0:
                os.close(target[0])
            return None
        egress.transport_cc_id = self._transport_cc_id
        egress.pacing_rate = self._pacing_rate
        for payload_type in self._unpaced:
            egress.unpace(payload_type)
        egress.on_paced = self._arm_drain
        self._egress = egress
        self.send_rewritten = egress.send_rewritten
        self.send_vp8 = egress.send_vp8
        return egress

    def _target(
        self,
    ) -> tuple[int, str, int, Callable[[bytes], None] | None, SendBatch | None] | None:
        """(socket descriptor, host, port, relay, batch) of the nominated pair, as Egress takes
        them; the batch is the shared port's (its reads queue the copies they make)."""
        pair = self._connection._nominated.get(1)
        if pair is None:
            return None
        host, port = pair.remote_addr[:2]
        host = host.partition("%")[0]  # an IPv6 scope id: the socket is bound to its interface
        protocol = pair.protocol
        if type(protocol) in (aioice.ice.StunProtocol, _MuxedStunProtocol):
            # written through a duplicate of aioice's socket descriptor, not uvloop's
            # transport: the C egress sends from its one buffer and cannot wait
            fd = os.dup(protocol.transport.get_extra_info("socket").fileno())
            if isinstance(protocol, _MuxedStunProtocol):
                return fd, host, port, None, protocol.shared.port.batch
            return fd, host, port, None, None
        # a TURN relay wraps each packet and may wait for a channel binding: a copy goes
        # through aioice
        return -1, host, port, self._relay_sender(pair), None

    def repath(self) -> None:
        """Send on the pair ICE nominated now (after a restart): the egress keeps its
        transport-wide numbering, send records and pacer, and changes only where it sends."""
        egress, session = self._egress, self._dtls._tx_srtp
        if egress is None or session is None:
            return
        target = self._target()
        if target is None:
            return
        try:
            egress.__init__(srtp_session(session), *target)  # type: ignore[misc]
        except ValueError:
            if target[0] >= 0:
                os.close(target[0])
            self.close()

    def _relay_sender(self, pair: Any) -> Callable[[bytes], None]:
        protocol, addr = pair.protocol, pair.remote_addr

        def send(data: bytes) -> None:
            task = asyncio.ensure_future(protocol.send_data(data, addr))
            self._relayed_sends.add(task)
            task.add_done_callback(self._relayed_sends.discard)

        return send

    def _on_dtls_state(self) -> None:
        if self._dtls._state in (State.CLOSED, State.FAILED):
            self.close()

    def close(self) -> None:
        """Stop sending: the duplicated socket descriptor is closed; later packets are dropped."""
        egress = self._egress
        if egress is not None:
            packets, octets, errors = self._closed_counts
            self._closed_counts = (
                packets + egress.packets_sent,
                octets + egress.bytes_sent,
                errors + egress.send_errors,
            )
            egress.on_paced = None
            egress.close()
            self._egress = None
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        self.send_rewritten = self.send_vp8 = self._send_dropped

    def _send_dropped(self, *args: Any) -> None:
        return None


def await_peer_reflexive(connection: aioice.ice.Connection) -> None:
    """Let ``connection`` wait for the peer's checks while it has no candidate pair at all.

    A client may signal end-of-candidates without a candidate (a receive-only Chromium page
    hides its host addresses behind mDNS names, or has none to give): its checks still reach us
    and make peer-reflexive candidates (RFC 8445 §7.3.1.3). aioice 0.13 fails at once when its
    check list is empty at end-of-candidates, before those checks arrive (seen in one join in
    ten from a second network namespace), and drops the components the peer gave no candidate
    for — all of them. While the list is empty, more candidates count as expected, and with no
    remote candidate no component is dropped; the connection's own timeout
    (``connect_timeout``) ends a peer that never checks.
    """
    private: Any = connection
    expected = private._remote_candidates_expected
    prune = private._prune_components

    def remote_candidates_expected() -> bool:
        return bool(expected()) or not private._check_list

    def prune_components() -> None:
        if private._remote_candidates:
            prune()

    private._remote_candidates_expected = remote_candidates_expected
    private._prune_components = prune_components


def _ignore_rtp(data: bytes, now: float) -> None:
    return None


def _ignore_rtcp(data: bytes) -> None:
    return None


def _ignore_feedback(packet: bytes, raw: EgressFeedback, now: float) -> None:
    return None


class ServerPeerConnection(RTCPeerConnection):
    """An aiortc peer connection whose media plane belongs to the SFU."""

    def __init__(self, ice_servers: Sequence[IceServer] = ()) -> None:
        servers = [
            RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
            for s in ice_servers
        ]
        # iceServers=[] keeps aiortc from contacting its default public STUN server
        super().__init__(
            RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        private: Any = self
        own: RTCCertificate = private._RTCPeerConnection__certificates[0]
        private._RTCPeerConnection__certificates = [_ServerCertificate(own._key, own._cert)]
        self.media_transport: MediaTransport | None = None
        # the local descriptions in effect before our outstanding offer, for a rollback
        self.before_offer: tuple[Any, Any] | None = None
        self.on_media_transport: Callable[[MediaTransport], None] | None = None
        #: the simulcast of each client m-line that has some, by mid, as last negotiated
        self.simulcast: dict[str, NegotiatedSimulcast] = {}
        #: told the outcome of each ICE restart the client asked for (True: a new pair)
        self.on_ice_restart: Callable[[bool], None] | None = None
        self.ice_restarts = 0
        self._ice_restart: asyncio.Task[None] | None = None
        #: the shared port this connection's ICE uses (use_udp_port when it was made), if any
        self.udp_port: UdpPort | None = None
        self._udp_connection: aioice.ice.Connection | None = None

    def restart_ice_checks(self, remote: tuple[str, str]) -> None:
        """Run the checks of an ICE restart the client's offer began (in the background);
        when no pair comes of it, the ICE transport fails as a first connection would."""
        if self._ice_restart is not None:
            self._ice_restart.cancel()  # a newer restart supersedes it
        self._ice_restart = task = asyncio.ensure_future(complete_ice_restart(self, remote))
        task.add_done_callback(self._ice_restart_done)

    def _ice_restart_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        if self._ice_restart is task:
            self._ice_restart = None
        ok = task.exception() is None
        self.ice_restarts += 1
        if not ok:
            transport: Any = _ice_transport(self)
            if transport is not None and transport.state != "closed":
                transport._RTCIceTransport__setState("failed")
        if self.on_ice_restart is not None:
            self.on_ice_restart(ok)

    async def close(self) -> None:
        if self._ice_restart is not None:
            self._ice_restart.cancel()
        await super().close()
        if self.media_transport is not None:
            self.media_transport.close()  # the socket descriptor it duplicated
        if self.udp_port is not None and self._udp_connection is not None:
            self.udp_port.forget(self._udp_connection)  # also when it never gathered

    # aiortc calls these through name-mangled attributes; defining them here overrides them.
    def _RTCPeerConnection__createDtlsTransport(self) -> RTCDtlsTransport:
        # one transport for the connection's whole life, also when a rollback removed every
        # transceiver that used it
        if self.media_transport is not None:
            return self.media_transport.dtls
        base: Any = super()
        dtls: RTCDtlsTransport = base._RTCPeerConnection__createDtlsTransport()
        if _udp_port is not None and not _udp_port.closed:
            # before gathering (setLocalDescription) and before any SDP carries the ufrag
            connection: Any = cast(Any, dtls.transport)._connection
            connection._sfu_udp_port = self.udp_port = _udp_port
            connection._local_username = _udp_port.reserve_ufrag(connection)
            self._udp_connection = connection
        self.media_transport = MediaTransport(dtls)
        if self.on_media_transport is not None:
            self.on_media_transport(self.media_transport)
        return dtls

    def _RTCPeerConnection__createTransceiver(
        self, direction: str, kind: str, sender_track: Any = None
    ) -> RTCRtpTransceiver:
        # aiortc builds them by the names in its module: lend it ours for this one call
        module: Any = aiortc_rtcpeerconnection
        saved = module.RTCRtpSender, module.RTCRtpReceiver
        module.RTCRtpSender, module.RTCRtpReceiver = _InertSender, _InertReceiver
        try:
            base: Any = super()
            transceiver: RTCRtpTransceiver = base._RTCPeerConnection__createTransceiver(
                direction, kind, sender_track
            )
        finally:
            module.RTCRtpSender, module.RTCRtpReceiver = saved
        return transceiver


# --- negotiation ---


def add_send_transceiver(pc: ServerPeerConnection, kind: Kind) -> RTCRtpTransceiver:
    return pc.addTransceiver(kind, direction="sendonly")


def set_sender_identity(transceiver: RTCRtpTransceiver, stream_id: str, track_id: str) -> None:
    """What the subscriber's a=msid shows for this m-line (stream = publisher, track = its id)."""
    sender = transceiver.sender
    sender._stream_id = stream_id
    sender._track_id = track_id


async def create_offer(
    pc: ServerPeerConnection, new_codecs: Mapping[RTCRtpTransceiver, Codec]
) -> str:
    """Create and apply a local offer; returns its SDP.

    Negotiated m-lines keep their payload types and extension ids; new m-lines offer exactly the
    codec in ``new_codecs`` (the publisher's), with payload types and extension ids that do not
    collide with any already used on this BUNDLE transport (browsers reject collisions; one id
    per URI across a BUNDLE group, RFC 8285 §6, RFC 8843 §9.2). New video m-lines also offer
    the rid header extensions (RFC 8852), which the server reads on whatever a client sends.
    """
    transceivers: list[RTCRtpTransceiver] = pc.getTransceivers()
    settled = {
        t: (list(t._codecs), list(t._headerExtensions))
        for t in transceivers
        if t.mid is not None and t._codecs
    }
    offer = await pc.createOffer()
    description = aiortc_sdp.SessionDescription.parse(offer.sdp)
    used_pts: dict[int | None, RTCRtpCodecParameters] = {}
    ext_ids: dict[str, int] = {}
    for codecs, extensions in settled.values():
        for c in codecs:
            used_pts.setdefault(c.payloadType, c)
        for e in extensions:
            ext_ids.setdefault(e.uri, e.id)
    for t, (codecs, extensions) in settled.items():
        t._codecs, t._headerExtensions = codecs, extensions
    for index, media in enumerate(description.media):
        transceiver = next((t for t in transceivers if t._get_mline_index() == index), None)
        if transceiver is None or media.kind not in ("audio", "video"):
            continue
        if transceiver in settled:
            codecs, extensions = settled[transceiver]
        else:
            wanted = new_codecs.get(transceiver)
            codecs = _codec_parameters(wanted, used_pts) if wanted else media.rtp.codecs
            offered = [*media.rtp.headerExtensions, _TRANSPORT_CC_EXTENSION]
            if media.kind == "video":
                offered += _RID_EXTENSIONS
                offered.append(_PLAYOUT_DELAY_EXTENSION)
            extensions = _extension_parameters(offered, ext_ids)
            transceiver._codecs, transceiver._headerExtensions = codecs, extensions
        media.rtp.codecs = codecs
        media.rtp.headerExtensions = extensions
        media.fmt = [c.payloadType for c in codecs]
    pc.before_offer = local_descriptions(pc)
    await pc.setLocalDescription(RTCSessionDescription(sdp=str(description), type="offer"))
    # a subsequent offer keeps the simulcast negotiated (JSEP §5.2.2): without it a browser's
    # answer would drop its layers but one
    sdp = sdp_simulcast.with_layers(str(pc.localDescription.sdp), _layers(pc))
    compact_descriptions(pc)
    return sdp


def _codec_parameters(
    codec: Codec, used: dict[int | None, RTCRtpCodecParameters]
) -> list[RTCRtpCodecParameters]:
    kind = "audio" if codec.channels else "video"
    # the subscriber's transport-wide feedback drives its bandwidth estimate (sfu/bwe)
    feedback = codec.feedback if TRANSPORT_CC in codec.feedback else (*codec.feedback, TRANSPORT_CC)
    media = RTCRtpCodecParameters(
        mimeType=f"{kind}/{codec.name}",
        clockRate=codec.clock_rate,
        channels=codec.channels,
        payloadType=_free_pt(codec, used),
        rtcpFeedback=[_feedback(f) for f in feedback],
        parameters=dict(codec.fmtp),
    )
    used[media.payloadType] = media
    result = [media]
    if codec.rtx_payload_type is not None:
        rtx = RTCRtpCodecParameters(
            mimeType=f"{kind}/rtx",
            clockRate=codec.clock_rate,
            payloadType=0,
            parameters={"apt": media.payloadType},
        )
        rtx.payloadType = _free_pt(None, used, rtx, preferred=codec.rtx_payload_type)
        used[rtx.payloadType] = rtx
        result.append(rtx)
    return result


def _same_codec(a: RTCRtpCodecParameters, b: RTCRtpCodecParameters) -> bool:
    return (
        a.mimeType.lower() == b.mimeType.lower()
        and a.clockRate == b.clockRate
        and a.parameters == b.parameters
    )


def _free_pt(
    codec: Codec | None,
    used: Mapping[int | None, RTCRtpCodecParameters],
    rtx: RTCRtpCodecParameters | None = None,
    preferred: int | None = None,
) -> int:
    """Reuse the payload type this format already has on the transport, else a free one."""
    if codec is not None:
        for pt, existing in used.items():
            if (
                existing.mimeType.lower().endswith("/" + codec.name.lower())
                and (
                    existing.clockRate == codec.clock_rate
                    and existing.parameters == dict(codec.fmtp)
                )
                and pt is not None
            ):
                return pt
        if codec.payload_type not in used:
            return int(codec.payload_type)
    if rtx is not None:
        for pt, existing in used.items():
            if _same_codec(existing, rtx) and pt is not None:
                return pt
        if preferred is not None and preferred not in used:
            return preferred
    for candidate in (*range(96, 128), *range(35, 64)):
        if candidate not in used:
            return int(candidate)
    raise RuntimeError("no free payload type left on this transport")


#: Offered on every m-line the server offers: one transport-wide numbering covers them all.
_TRANSPORT_CC_EXTENSION = RTCRtpHeaderExtensionParameters(id=5, uri=URI_TRANSPORT_CC)
#: Offered on every new video m-line (RFC 8852), with libwebrtc's ids unless the BUNDLE has others.
_RID_EXTENSIONS = (
    RTCRtpHeaderExtensionParameters(id=10, uri=URI_RID),
    RTCRtpHeaderExtensionParameters(id=11, uri=URI_REPAIRED_RID),
)
#: Offered on video m-lines: a lossy subscriber's browser is asked for a playout delay that covers
#: a repair (sfu.media.playout_delay).
_PLAYOUT_DELAY_EXTENSION = RTCRtpHeaderExtensionParameters(id=6, uri=URI_PLAYOUT_DELAY)


def _feedback(text: str) -> RTCRtcpFeedback:
    kind, _, parameter = text.partition(" ")
    return RTCRtcpFeedback(type=kind, parameter=parameter or None)


def _extension_parameters(
    offered: list[RTCRtpHeaderExtensionParameters], ids: dict[str, int]
) -> list[RTCRtpHeaderExtensionParameters]:
    result = []
    for ext in offered:
        if ext.uri not in ids:
            taken = set(ids.values())
            ids[ext.uri] = ext.id if ext.id not in taken else min(set(range(1, 15)) - taken)
        result.append(RTCRtpHeaderExtensionParameters(id=ids[ext.uri], uri=ext.uri))
    return result


LocalDescriptions = tuple[Any, Any]


def local_descriptions(pc: RTCPeerConnection) -> LocalDescriptions:
    """What :func:`rollback_offer` restores: take it just before ``setLocalDescription(offer)``."""
    private: Any = pc
    return (
        private._RTCPeerConnection__pendingLocalDescription,
        private._RTCPeerConnection__currentLocalDescription,
    )


def rollback_local_offer(pc: ServerPeerConnection) -> list[RTCRtpTransceiver]:
    """Undo the server's unanswered offer (JSEP §5.7); see :func:`rollback_offer`."""
    if pc.before_offer is None:
        return []
    before, pc.before_offer = pc.before_offer, None
    return rollback_offer(pc, before)


def rollback_offer(pc: RTCPeerConnection, before: LocalDescriptions) -> list[RTCRtpTransceiver]:
    """Undo an unanswered local offer (JSEP §5.7: aiortc has no ``rollback``) back to
    ``before`` (:func:`local_descriptions`); returns the transceivers it had added.

    Those transceivers are detached: a remote offer must never be matched to them.
    """
    if pc.signalingState != "have-local-offer":
        return []
    private: Any = pc
    pending, current = before
    settled = pending or current
    settled_mids = {m.rtp.muxId for m in settled.media} if settled is not None else set()
    transceivers: list[RTCRtpTransceiver] = private._RTCPeerConnection__transceivers
    added = [t for t in transceivers if t.mid is not None and t.mid not in settled_mids]
    seen_mids: set[str] = private._RTCPeerConnection__seenMids
    for t in added:
        transceivers.remove(t)
        # the mid was never answered: the next offer may use it again instead of a new one
        seen_mids.discard(t.mid)
    # aiortc never promotes an answered local offer to "current": restore both as they were
    private._RTCPeerConnection__pendingLocalDescription = pending
    private._RTCPeerConnection__currentLocalDescription = current
    private._RTCPeerConnection__signalingState = "stable"
    if settled is None:
        # our first offer made us ICE-controlling; the remote offer must decide again (RFC 8445)
        for ice_transport in private._RTCPeerConnection__iceTransports:
            ice_transport._role_set = False
    return added


#: Opus receive parameters we declare (RFC 7587 §6.1): subscribers decode, so in-band FEC helps.
OPUS_PARAMETERS = {"minptime": 10, "useinbandfec": 1}


async def accept_offer(pc: ServerPeerConnection, sdp: str) -> str:
    """Apply a remote offer and return the applied answer's SDP.

    Raises ValueError with a message for the client, before anything is applied, if the offer
    changes the simulcast layers of an m-line that keeps sending.
    """
    described = sdp_simulcast.receivable(sdp)
    _check_layers_kept(pc, described, "offer")
    restart = None
    if ice_restart_offered(pc, sdp) or ice_restart_pending(pc):
        # a restart the client asks for, or ours that its offer crossed (glare): it offers
        restart = ice_credentials(sdp)
        begin_ice_restart(pc, controlling=False)  # the offerer of a restart controls it
    await pc.setRemoteDescription(
        RTCSessionDescription(sdp=_bundle_candidates(_bundle_setup(sdp)), type="offer")
    )
    # aiortc drops transport-cc: a publisher's own send-side estimator needs our feedback, and
    # the m-lines we send on keep theirs through an offer the client makes
    accept_transport_cc(pc, ("sendonly", "recvonly", "sendrecv"))
    keep_rid_extensions(pc)
    accept_playout_delay(pc)
    for transceiver in pc.getTransceivers():
        # aiortc answers Opus without fmtp, which turns the publisher's FEC off
        for codec in transceiver._codecs:
            if codec.mimeType.lower() == "audio/opus":
                for key, value in OPUS_PARAMETERS.items():
                    codec.parameters.setdefault(key, value)
    for mid, mline in described.items():
        if mline.rids:
            pc.simulcast[mid] = NegotiatedSimulcast(mline.rids, ())
        else:
            pc.simulcast.pop(mid, None)
    _apply_simulcast(pc, described)
    await pc.setLocalDescription(await pc.createAnswer())
    answer = sdp_simulcast.with_layers(str(pc.localDescription.sdp), _layers(pc))
    compact_descriptions(pc)
    if restart is not None:
        pc.restart_ice_checks(restart)
    return answer


async def accept_answer(pc: ServerPeerConnection, sdp: str) -> None:
    """Apply the answer to our offer.

    Raises ValueError with a message for the client, before anything is applied, if its
    simulcast names layers our offer did not have, or changes those of a sending m-line.
    """
    described = sdp_simulcast.receivable(sdp)
    for mid, mline in described.items():
        offered = _layers(pc).get(mid, ())
        for rid in mline.rids:
            if rid not in {layer.rid for layer in offered}:
                raise InvalidValue(
                    f"mid {show(mid)}: a=simulcast names rid {show(rid)}, which the server's "
                    "offer did not have (RFC 8853 §5.3.2)"
                )
    _check_layers_kept(pc, described, "answer")
    await pc.setRemoteDescription(
        RTCSessionDescription(sdp=_bundle_candidates(_bundle_setup(sdp)), type="answer")
    )
    pc.before_offer = None  # answered: nothing left to roll back to (it held a whole offer)
    if ice_restart_pending(pc):  # our offer restarted ICE: check with the answer's credentials
        remote = ice_credentials(sdp)
        if remote is not None:
            pc.restart_ice_checks(remote)
    # the subscriber's transport-wide feedback, where it answered it (aiortc drops it)
    accept_transport_cc(pc, ("recvonly", "sendrecv"))
    keep_rid_extensions(pc)
    accept_playout_delay(pc)
    for mid, mline in described.items():
        negotiated = pc.simulcast.get(mid)
        if negotiated is not None and not mline.rids:
            del pc.simulcast[mid]
    _apply_simulcast(pc, described)
    compact_descriptions(pc)


@dataclass(frozen=True, slots=True)
class NegotiatedSimulcast:
    """The simulcast of one client m-line, as last negotiated."""

    #: the rids of the client's last offer (first alternatives, in its order): while the m-line
    #: sends, later offers and answers must keep them
    rids: tuple[str, ...]
    #: those the server receives: in the answer to that offer and in the server's later offers
    layers: tuple[Layer, ...]


def _layers(pc: ServerPeerConnection) -> dict[str, tuple[Layer, ...]]:
    return {mid: negotiated.layers for mid, negotiated in pc.simulcast.items()}


def _check_layers_kept(
    pc: ServerPeerConnection, described: Mapping[str, sdp_simulcast.MLine], kind: str
) -> None:
    """Refuse a description that changes the layers of an m-line that sends and keeps sending.

    A published track's layers are the rids it was published with: browsers cannot change the
    rids of a sender (RTCRtpSender.setParameters refuses), and the server's track keeps
    one receiver per layer. A rid's pause (``~``) may change; an m-line that stopped sending
    may come back with other layers (it is published again as a new track).
    """
    for transceiver in pc.getTransceivers():
        mline = described.get(str(transceiver.mid))
        if (
            mline is None
            or not mline.sending
            or transceiver.currentDirection not in ("recvonly", "sendrecv")
        ):
            continue
        negotiated = pc.simulcast.get(mline.mid)
        if kind == "offer":
            before = negotiated.rids if negotiated else ()
        else:
            before = tuple(layer.rid for layer in negotiated.layers) if negotiated else ()
        if mline.rids != before:
            raise InvalidValue(
                f"mid {show(mline.mid)}: the simulcast layers of a sending m-line cannot change "
                f"(negotiated: {_listed(before)}; this {kind}: {_listed(mline.rids)}); "
                "stop its transceiver and publish on a new one"
            )


def _listed(rids: Sequence[str]) -> str:
    return ", ".join(rids) if rids else "one stream, no simulcast"


def _apply_simulcast(
    pc: ServerPeerConnection, described: Mapping[str, sdp_simulcast.MLine]
) -> None:
    """After a remote description: the layers the server receives (their rid header extensions
    are kept by :func:`keep_rid_extensions`). A layer whose pt= restriction allows no payload
    type negotiated is left out.
    """
    for transceiver in pc.getTransceivers():
        mid = str(transceiver.mid)
        mline = described.get(mid)
        negotiated = pc.simulcast.get(mid)
        if mline is None or negotiated is None:
            continue
        payload_types = {c.payloadType for c in transceiver._codecs}
        layers = tuple(
            layer
            for layer in mline.layers
            if not layer.payload_types or payload_types.intersection(layer.payload_types)
        )
        pc.simulcast[mid] = NegotiatedSimulcast(negotiated.rids, layers)


def keep_rid_extensions(pc: RTCPeerConnection) -> None:
    """Keep the rid header extensions (RFC 8852) on every video m-line the remote description
    just applied lists them on, with its ids; call after each ``setRemoteDescription``.

    aiortc negotiates only the extensions of its own list, which has no rid: it would answer
    an offer without them and drop them from an answer. The server supports them on every
    video m-line (it reads them on whatever a client sends: JSEP §5.3.1 has an answer list each
    supported extension the offer has), and a client may need them negotiated before it can
    offer simulcast on a new m-line: Chromium (156) offers on a new m-section only the
    extensions already negotiated in its BUNDLE group once it has answered an offer with video,
    and then refuses its own simulcast offer for want of the rid extension.
    """
    private: Any = pc
    description = private._RTCPeerConnection__remoteDescription()
    by_mid = {t.mid: t for t in pc.getTransceivers() if t.mid is not None and not t.stopped}
    for media in description.media if description is not None else ():
        transceiver = by_mid.get(media.rtp.muxId)
        if transceiver is None or media.kind != "video":
            continue
        rid = [e for e in media.rtp.headerExtensions if e.uri in sdp_simulcast.RID_EXTENSIONS]
        others = [
            e for e in transceiver._headerExtensions if e.uri not in sdp_simulcast.RID_EXTENSIONS
        ]
        # a new list: compact_descriptions may share the old one with other transceivers
        transceiver._headerExtensions = others + rid


#: The descriptions aiortc keeps: up to four, each with every m-line of the connection.
_KEPT_DESCRIPTIONS = tuple(
    f"_RTCPeerConnection__{state}{side}Description"
    for state in ("pending", "current")
    for side in ("Local", "Remote")
)


def compact_descriptions(pc: ServerPeerConnection) -> None:
    """Let the m-lines of each kept description share the values they have equal.

    aiortc keeps every applied description parsed, and each m-line owns its copies: on a
    BUNDLE connection every m-line carries the same ICE parameters, candidates and DTLS
    fingerprints (for a local description, freshly computed per m-line; for a remote one, also
    kept per transceiver to start the transport), and the m-lines (and transceivers) of one kind
    the same codecs and extensions. A subscriber has an m-line per track it receives,
    so these copies made its memory grow with the room. Only equal values are shared, so the
    SDP the description prints is unchanged; aiortc never modifies a description once applied
    (an offer or answer is parsed anew, and ours are built from the transceivers).
    """
    private: Any = pc
    dtls: list[Any] = []
    ice: list[Any] = []
    candidates: list[Any] = []
    codecs: list[Any] = []
    extensions: list[Any] = []
    # each extension too: lists in another order (the rid and playout-delay extensions are
    # added after aiortc's own) would otherwise keep their own copies per m-line
    elements: list[Any] = []

    def extensions_shared(values: list[Any]) -> Any:
        return _shared([_shared(e, elements) for e in values], extensions)

    for name in _KEPT_DESCRIPTIONS:
        description = getattr(private, name)
        for media in description.media if description is not None else ():
            media.dtls = _shared(media.dtls, dtls)
            media.ice = _shared(media.ice, ice)
            media.ice_candidates = _shared(media.ice_candidates, candidates)
            media.rtp.codecs = _shared(media.rtp.codecs, codecs)
            media.rtp.headerExtensions = extensions_shared(media.rtp.headerExtensions)
    for transceiver in private._RTCPeerConnection__transceivers:
        transceiver._codecs = _shared(transceiver._codecs, codecs)
        transceiver._headerExtensions = extensions_shared(transceiver._headerExtensions)
    # what each transceiver's m-line said of the remote transport, kept to start it
    for table, pool in (
        (private._RTCPeerConnection__remoteDtls, dtls),
        (private._RTCPeerConnection__remoteIce, ice),
    ):
        for key, value in table.items():
            table[key] = _shared(value, pool)


def _shared(value: Any, pool: list[Any]) -> Any:
    """An equal value already in ``pool`` (a handful per description), else ``value``."""
    for existing in pool:
        if existing is value or existing == value:
            return existing
    pool.append(value)
    return value


#: what aiortc negotiates, for sdp_check: (codec name, clock rate) by kind, retransmission aside
SUPPORTED_CODECS = {
    kind: frozenset(
        (c.mimeType.partition("/")[2], c.clockRate)
        for c in codecs
        if not c.mimeType.lower().endswith("/rtx")
    )
    for kind, codecs in CODECS.items()
}


def parse_sdp(sdp: str, kind: sdp_check.Kind = "offer") -> Any:
    """Check a client's offer or answer (sfu.media.sdp_check) and parse it.

    Raises ValueError with a message for the client, before anything of ``sdp`` is applied.
    """
    sdp_check.check_description(sdp, kind, SUPPORTED_CODECS)
    try:
        return aiortc_sdp.SessionDescription.parse(sdp)
    except (ValueError, LookupError, AttributeError, TypeError, AssertionError) as exc:
        # sdp_check lets through a line aiortc cannot read: a gap to close there
        raise ValueError("the SDP could not be parsed") from exc


def _bundle_setup(sdp: str) -> str:
    """``sdp`` with the DTLS role (a=setup) of its BUNDLE-tagged m-line on every a=setup line.

    Every m-line uses the tagged m-line's transport (RFC 8843 §7; a=setup is a TRANSPORT
    attribute, RFC 8859), but aiortc takes the DTLS role from the last m-line that states one.
    Firefox, answering a server offer made while its DTLS handshake was still under way,
    states setup:passive in the tagged m-line and setup:active in the new ones: aiortc
    switched to the other role mid-handshake and derived the other side's SRTP keys, so no
    packet authenticated in either direction.
    """
    lines = sdp.splitlines()
    group = next((line.split()[1:] for line in lines if line.startswith("a=group:BUNDLE ")), [])
    sections: list[list[str]] = [[]]  # the session part, then each m-section
    for line in lines:
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    tagged = next((s for s in sections[1:] if group and f"a=mid:{group[0]}" in s), [])
    setup = next((line for line in tagged + sections[0] if line.startswith("a=setup:")), None)
    if setup is None:
        return sdp
    return "\r\n".join(setup if line.startswith("a=setup:") else line for line in lines) + "\r\n"


def _bundle_candidates(sdp: str) -> str:
    """``sdp`` with the candidates of all its m-lines, once each, in its last m-line.

    aiortc reads a transport's remote candidates from the last m-line that uses it, and here
    every m-line uses the one transport. A client that lists its candidates in the first,
    BUNDLE-tagged m-line only (RFC 8843) went unheard, and an a=end-of-candidates in the last
    m-line then ended ICE before any candidate was known.
    """
    lines = sdp.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("m=")), len(lines))
    kept, candidates, ended = lines[:first], [], False
    for line in lines[first:]:
        if line.startswith("a=candidate:"):
            candidates.append(line)
        elif line == "a=end-of-candidates":
            ended = True
        else:
            kept.append(line)
    moved = list(dict.fromkeys(candidates)) + ["a=end-of-candidates"] * ended
    return "\r\n".join(kept + moved) + "\r\n"


async def add_remote_candidate(
    pc: ServerPeerConnection, candidate: str | None, sdp_mid: str | None, index: int | None
) -> None:
    """Add a client's trickled candidate (RFC 8838) to the connection's one ICE transport.

    Every m-line shares that transport (BUNDLE, RFC 8843, which sdp_check requires), so a
    candidate for any m-line of the client's current description counts; aiortc's
    addIceCandidate would drop one whose sdpMid names a bundled m-line other than the first.
    Candidates of another transport than UDP (TCP) are dropped: the server is UDP-only.
    Raises ValueError with a message for the client.
    """
    if not candidate:
        await pc.addIceCandidate(None)
        return
    parsed = parse_candidate(candidate)
    remote = pc.remoteDescription
    if remote is None:
        raise InvalidValue("none of your offers or answers is in effect yet")
    mids = sdp_check.mids(remote.sdp)
    if sdp_mid is not None and sdp_mid not in mids:
        raise InvalidValue(f"sdpMid {show(sdp_mid)} names no m-line of your current description")
    if sdp_mid is None and index is not None and index >= len(mids):
        raise InvalidValue(f"sdpMLineIndex {index} is past your description's {len(mids)} m-lines")
    transport = pc.media_transport
    if parsed.transport != "udp" or transport is None:
        return
    await transport.dtls.transport.addRemoteCandidate(
        RTCIceCandidate(
            component=parsed.component,
            foundation=parsed.foundation,
            ip=parsed.address,
            port=parsed.port,
            priority=parsed.priority,
            protocol=parsed.transport,
            type=parsed.type,
            relatedAddress=parsed.related_address,
            relatedPort=parsed.related_port,
            tcpType=parsed.tcp_type,
        )
    )


def media_params(pc: ServerPeerConnection, transceiver: RTCRtpTransceiver) -> MediaParams:
    """What negotiation settled on ``transceiver`` (call once its m-line is answered)."""
    codecs = []
    rtx_of: dict[int, int] = {}
    negotiated: list[Any] = transceiver._codecs
    for c in negotiated:
        if c.name.lower() == "rtx":
            rtx_of[int(c.parameters["apt"])] = c.payloadType
    for c in negotiated:
        if c.name.lower() in ("rtx", "red", "ulpfec", "flexfec-03"):
            continue
        codecs.append(
            Codec(
                payload_type=c.payloadType,
                name=c.name,
                clock_rate=c.clockRate,
                channels=c.channels,
                fmtp={k: str(v) for k, v in c.parameters.items()},
                rtx_payload_type=rtx_of.get(c.payloadType),
                feedback=tuple(
                    f"{f.type} {f.parameter}" if f.parameter else f.type for f in c.rtcpFeedback
                ),
            )
        )
    remote_ssrcs: tuple[int, ...] = ()
    remote_rtx: dict[int, int] = {}
    msid = None
    # the description aiortc applied, as it keeps it: pc.remoteDescription would print it whole,
    # and parsing that per m-line made every answer cost m-lines squared
    private: Any = pc
    description = (
        private._RTCPeerConnection__pendingRemoteDescription
        or private._RTCPeerConnection__currentRemoteDescription
    )
    if description is not None:
        for media in description.media:
            if media.rtp.muxId != transceiver.mid:
                continue
            msid = media.msid
            remote_ssrcs = tuple(s.ssrc for s in media.ssrc)
            for group in media.ssrc_group:
                if group.semantic == "FID" and len(group.items) == 2:
                    remote_rtx[int(group.items[1])] = int(group.items[0])
            if remote_rtx:
                remote_ssrcs = tuple(s for s in remote_ssrcs if s not in remote_rtx)
    kind: Kind = "audio" if transceiver.kind == "audio" else "video"
    simulcast = pc.simulcast.get(str(transceiver.mid))
    return MediaParams(
        mid=str(transceiver.mid),
        kind=kind,
        codecs=tuple(codecs),
        extensions={e.uri: e.id for e in transceiver._headerExtensions},
        local_ssrc=transceiver.sender._ssrc,
        local_rtx_ssrc=transceiver.sender._rtx_ssrc,
        remote_ssrcs=remote_ssrcs,
        remote_rtx=remote_rtx,
        msid=msid,
        rids=tuple(layer.rid for layer in simulcast.layers) if simulcast else (),
    )


@dataclass(frozen=True, slots=True)
class OfferedMLine:
    """One m-line of a remote offer: its mid, kind and whether the remote peer sends on it."""

    mid: str
    kind: str
    sending: bool


def offered_m_lines(sdp: str) -> list[OfferedMLine]:
    """The m-lines of a remote offer that :func:`parse_sdp` accepted."""
    description = aiortc_sdp.SessionDescription.parse(sdp)
    # aiortc's parser drops a=bundle-only, which makes a port-0 m-line one that sends
    sending = {mid for mid, mline in sdp_simulcast.receivable(sdp).items() if mline.sending}
    return [
        OfferedMLine(str(media.rtp.muxId), media.kind, str(media.rtp.muxId) in sending)
        for media in description.media
    ]


# --- client side: simulcast publishing for sfu_client ---
#
# aiortc sends one RTP stream per m-line. sfu_client.simulcast writes the m-line's packets itself
# (three rid streams, RFC 8853), so the transceiver's aiortc sender must send nothing, RTCP for
# the simulcast SSRCs must reach the publisher, and its packets go through the DTLS transport's
# SRTP. tests/unit/test_aiortc_bridge_client.py pins what this section relies on.

import logging  # noqa: E402 - kept in this section, which the rest of the module does not use
import weakref  # noqa: E402
from collections.abc import Awaitable  # noqa: E402

from aiortc.mediastreams import MediaStreamTrack  # noqa: E402
from aiortc.rtcrtpparameters import RTCRtpSendParameters  # noqa: E402

_client_logger = logging.getLogger(__name__ + ".client")

SenderStarted = Callable[[str, str], None]  # (mid, RTCP cname)
SenderStopped = Callable[[], Awaitable[None]]
RtcpTap = Callable[[bytes], None]


async def _nothing_to_stop() -> None:
    return None


class _ExternalSender(RTCRtpSender):
    """An aiortc sender that sends nothing: its owner writes the m-line's packets.

    aiortc calls ``send()`` once the DTLS transport is up and the m-line negotiated as sending
    (again after each renegotiation), and ``stop()`` when the transceiver or connection closes.
    aiortc's own RTP and RTCP tasks never start: no packet or sender report with the SSRC in
    aiortc's a=ssrc lines (which the simulcast offer removes) ever leaves.
    """

    def __init__(self, track_or_kind: MediaStreamTrack | str, transport: RTCDtlsTransport) -> None:
        super().__init__(track_or_kind, transport)
        self.on_started: SenderStarted | None = None
        self.on_stopped: SenderStopped = _nothing_to_stop
        self._external_started = False

    async def send(self, parameters: RTCRtpSendParameters) -> None:
        if self._external_started or self.on_started is None:
            return
        self._external_started = True
        self.on_started(str(parameters.muxId), str(parameters.rtcp.cname or ""))

    async def stop(self) -> None:
        await self.on_stopped()


def add_external_send_transceiver(
    pc: RTCPeerConnection,
    track: MediaStreamTrack,
    on_started: SenderStarted,
    on_stopped: SenderStopped,
) -> RTCRtpTransceiver:
    """A sendonly transceiver for ``track`` whose packets the caller sends itself.

    ``on_started(mid, cname)`` runs once the transport is connected and the m-line negotiated;
    ``on_stopped()`` is awaited when aiortc stops the sender (connection closed).
    """
    module: Any = aiortc_rtcpeerconnection
    saved = module.RTCRtpSender
    module.RTCRtpSender = _ExternalSender  # aiortc builds senders by this module-level name
    try:
        transceiver = pc.addTransceiver(track, direction="sendonly")
    finally:
        module.RTCRtpSender = saved
    sender = transceiver.sender
    if not isinstance(sender, _ExternalSender):
        raise RuntimeError("aiortc no longer builds its senders by a module-level name")
    sender.on_started = on_started
    sender.on_stopped = on_stopped
    return transceiver


async def send_srtp(dtls: RTCDtlsTransport, packet: bytes) -> bool:
    """Protect and send one RTP or RTCP packet; False when the transport is not connected.

    Looked up on each call: a load client may have wrapped the instance's ``_send_rtp``.
    """
    try:
        await cast(Any, dtls)._send_rtp(packet)
    except ConnectionError:
        return False
    return True


_rtcp_taps: weakref.WeakKeyDictionary[RTCDtlsTransport, list[RtcpTap]] = weakref.WeakKeyDictionary()


def tap_rtcp(dtls: RTCDtlsTransport, tap: RtcpTap) -> Callable[[], None]:
    """Call ``tap(compound)`` with every decrypted RTCP packet ``dtls`` receives, before aiortc
    handles it (aiortc's router would drop RTCP for SSRCs none of its senders has, and routes
    a FIR by its header's media SSRC, which RFC 5104 sets to 0). Returns the untap function.
    """
    taps = _rtcp_taps.get(dtls)
    if taps is None:
        taps = _rtcp_taps[dtls] = []
        private: Any = dtls
        handle = private._handle_rtcp_data
        active = taps

        async def tapped(data: bytes) -> None:
            for each in tuple(active):
                try:
                    each(data)
                except Exception:  # a bug in a tap must not end aiortc's receive loop
                    _client_logger.exception("RTCP tap failed")
            await handle(data)

        private._handle_rtcp_data = tapped
    taps.append(tap)

    def untap() -> None:
        if tap in taps:
            taps.remove(tap)

    return untap


# --- transport-wide congestion control: keeping it negotiated (server and client), and the
# client's receive tap ---
#
# aiortc negotiates neither the transport-wide sequence number extension nor transport-cc
# feedback, and reports nothing of them. accept_transport_cc keeps both where the remote side
# offered or answered them: the server's accept_offer/accept_answer call it (create_offer offers
# them), and so does sfu_client after each remote description. A client also taps each
# decrypted RTP packet before aiortc handles it and sends the feedback itself
# (sfu_client.transport_cc; sfu.media.params.URI_TRANSPORT_CC,
# draft-holmer-rmcat-transport-wide-cc-extensions-01).

RtpTap = Callable[[bytes, float], None]  # (decrypted RTP packet, time.monotonic() on arrival)


def accept_transport_cc(
    pc: RTCPeerConnection, directions: tuple[str, ...] = ("sendonly", "sendrecv")
) -> int:
    """Keep transport-cc on the m-lines the remote description just applied sends on (the
    server: receives on, ``directions`` ``recvonly``/``sendrecv``), if it offered (or answered)
    it; call after each ``setRemoteDescription``, before answering.

    aiortc drops both from what it answers and, on an answer, from what it negotiated. Returns
    the extension id (0: none): one for the whole bundle, as the server numbers its transport.
    """
    private: Any = pc
    description = private._RTCPeerConnection__remoteDescription()
    ext_id = 0
    by_mid = {t.mid: t for t in pc.getTransceivers() if t.mid is not None and not t.stopped}
    for media in description.media if description is not None else ():
        transceiver = by_mid.get(media.rtp.muxId)
        if transceiver is None or media.direction not in directions:
            continue
        offered = next((e for e in media.rtp.headerExtensions if e.uri == URI_TRANSPORT_CC), None)
        if offered is None:
            continue
        ext_id = offered.id
        extensions: list[RTCRtpHeaderExtensionParameters] = transceiver._headerExtensions
        if all(e.uri != URI_TRANSPORT_CC for e in extensions):
            extensions.append(RTCRtpHeaderExtensionParameters(id=offered.id, uri=URI_TRANSPORT_CC))
        with_feedback = {
            c.payloadType
            for c in media.rtp.codecs
            if any(f.type == TRANSPORT_CC for f in c.rtcpFeedback)
        }
        codecs: list[RTCRtpCodecParameters] = transceiver._codecs
        for codec in codecs:
            if codec.payloadType in with_feedback and all(
                f.type != TRANSPORT_CC for f in codec.rtcpFeedback
            ):
                codec.rtcpFeedback.append(RTCRtcpFeedback(type=TRANSPORT_CC))
    return ext_id


def accept_playout_delay(pc: RTCPeerConnection) -> None:
    """Keep the playout-delay extension (sfu.media.playout_delay) on the video m-lines the
    remote description just applied receives on, where it lists it; aiortc drops extensions it
    does not know from what it negotiated (and so from its answers)."""
    private: Any = pc
    description = private._RTCPeerConnection__remoteDescription()
    by_mid = {t.mid: t for t in pc.getTransceivers() if t.mid is not None and not t.stopped}
    for media in description.media if description is not None else ():
        transceiver = by_mid.get(media.rtp.muxId)
        if transceiver is None or media.kind != "video" or media.direction == "sendonly":
            continue
        listed = next((e for e in media.rtp.headerExtensions if e.uri == URI_PLAYOUT_DELAY), None)
        extensions: list[RTCRtpHeaderExtensionParameters] = transceiver._headerExtensions
        if listed is not None and all(e.uri != URI_PLAYOUT_DELAY for e in extensions):
            # a new list: compact_descriptions may share the old one with other transceivers
            element = RTCRtpHeaderExtensionParameters(id=listed.id, uri=URI_PLAYOUT_DELAY)
            transceiver._headerExtensions = [*extensions, element]


_rtp_taps: weakref.WeakKeyDictionary[RTCDtlsTransport, list[RtpTap]] = weakref.WeakKeyDictionary()


def tap_rtp(dtls: RTCDtlsTransport, tap: RtpTap) -> Callable[[], None]:
    """Call ``tap(packet, arrival)`` with every decrypted RTP packet ``dtls`` receives, before
    whatever handles it now (aiortc, or a load client's hook installed earlier). Returns the
    untap function. A hook that later replaces ``_handle_rtp_data`` outright drops the tap: its
    owner then feeds the tap itself.
    """
    taps = _rtp_taps.get(dtls)
    if taps is None:
        taps = _rtp_taps[dtls] = []
        private: Any = dtls
        handle = private._handle_rtp_data
        active = taps
        clock = time.monotonic

        async def tapped(data: bytes, arrival_time_ms: int) -> None:
            now = clock()  # aiortc's arrival_time_ms is too coarse for 250 µs receive deltas
            for each in tuple(active):
                try:
                    each(data, now)
                except Exception:  # a bug in a tap must not end aiortc's receive loop
                    _client_logger.exception("RTP tap failed")
            await handle(data, arrival_time_ms)

        private._handle_rtp_data = tapped
    taps.append(tap)

    def untap() -> None:
        if tap in taps:
            taps.remove(tap)

    return untap


# --- client side: recovering from a hole at a keyframe, as libwebrtc does ---
#
# tests/unit/test_aiortc_bridge_client.py pins the receiver's name-mangled jitter buffer and
# codec table this relies on.

from aiortc.jitterbuffer import JitterBuffer, JitterFrame  # noqa: E402
from aiortc.rtcrtpreceiver import NackGenerator  # noqa: E402
from aiortc.rtp import RtpPacket  # noqa: E402

from sfu.rtp.codecs import is_keyframe  # noqa: E402

#: A packet still missing is asked for again this often (s), NACK_TRIES times in all, and given
#: up (a keyframe asked for instead) once it was asked for that often and GIVE_UP_RTTS round
#: trips of its repairs have passed since the first NACK (libwebrtc: up to 10 times, an RTT
#: apart). Asking again within a round trip is deliberate: the server answers each NACK, so a
#: packet on a lossy link is sent twice or so, and one lost retransmission costs no round trip.
NACK_RETRY = 0.1
NACK_TRIES = 5
GIVE_UP_RTTS = 3.0
#: How far behind the newest packet a missing one is still asked for (packets): the jitter
#: buffer's capacity (aiortc's own generator forgets a hole 128 packets on: half a second of a
#: 640x360 layer, less than two round trips on a slow link, and then waits on it for good).
NACK_HORIZON = 512
#: Keyframes asked for because of given-up packets at most this often (s).
KEYFRAME_RETRY = 1.0
#: How long a keyframe past a hole waits for the hole's repair before what is behind the hole is
#: dropped, unless the NACK generator gave the hole up first: a retransmission takes one round
#: trip or two, and the playout delay hides that wait (sfu_client.playout).
KEYFRAME_PATIENCE = 0.25


class _RetryingNackGenerator(NackGenerator):
    """aiortc's NACK generator asks for missing packets only when a new gap appears, and then
    for all that are missing, so a lost retransmission leaves its hole for good (the jitter
    buffer then waits for 512 more packets). This one asks for a packet when it goes missing
    and again every NACK_RETRY on its own schedule while packets arrive (a new gap elsewhere
    is no retry of it: on a busy stream that gave packets up before any answer could come),
    and gives it up after NACK_TRIES asks and GIVE_UP_RTTS of the round trips its repairs take
    (RFC 6298's smoothed time from a packet's first NACK to its arrival: the server answers
    every NACK, so that is mostly the first answer's round trip); then it wants a keyframe:
    nothing else repairs the picture. RFC 4585 §6.2.1 leaves repetition to the receiver.

    ``pending`` holds every packet still awaited (seq -> [times asked, when last, when
    first]); aiortc sends a NACK for ``missing`` whenever :meth:`add` returns true, so
    ``missing`` is set to the packets due for a NACK then."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self.pending: dict[int, list[float]] = {}
        self.srtt: float | None = None  # the repairs' round trip, smoothed (s)
        self.given_up = 0
        #: set when packets were given up; the jitter buffer turns it into a PLI
        self.keyframe_wanted = False

    def add(self, packet: RtpPacket) -> bool:
        """Whether aiortc should send a NACK for ``missing`` now."""
        seq, now, pending = packet.sequence_number, self._clock(), self.pending
        if self.max_seq is None:
            self.max_seq = seq
            return False
        ahead = (seq - self.max_seq) & 0xFFFF
        if 0 < ahead < 0x8000:
            for step in range(max(1, ahead - NACK_HORIZON), ahead):
                pending[(self.max_seq + step) & 0xFFFF] = [0, -math.inf, now]
            self.max_seq = seq
        else:
            asked = pending.pop(seq, None)
            if asked is not None and asked[0] > 0:
                self._sample(now - asked[2])
        spent = {s for s in pending if (self.max_seq - s) & 0xFFFF > NACK_HORIZON}
        patience = 0.0 if self.srtt is None else GIVE_UP_RTTS * self.srtt
        due = []
        for s, asked in pending.items():
            if now - asked[1] < NACK_RETRY or s in spent:
                continue
            if asked[0] < NACK_TRIES:
                asked[0] += 1
                asked[1] = now
                due.append(s)
            elif now - asked[2] >= patience:  # else its repairs may still come
                spent.add(s)
        for s in spent:
            del pending[s]
        if spent:
            self.given_up += len(spent)
            self.keyframe_wanted = True
        self.missing = set(due)
        return bool(due)

    def _sample(self, rtt: float) -> None:
        self.srtt = rtt if self.srtt is None else self.srtt + (rtt - self.srtt) / 8


#: Hands frames to the receiver's decoder in order: (frame, payload type).
FrameSink = Callable[[JitterFrame, int], None]


class _RecoveringJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer, which holds every later frame behind a packet that never
    comes until 128 more have passed (15 s at a small layer's rate) — unless a keyframe
    starts after the hole: it needs nothing older, so what waits before it is dropped (libwebrtc
    does the same). A subscriber whose server switched it to a lower layer, while the old one's
    last packets were lost in a congested queue, then shows the new layer at its keyframe.
    Not at once: the frames behind a hole that a retransmission is about to fill would be lost
    for nothing (seen at every layer switch on a lossy link: 0.15-0.3 s of frames skipped).
    The keyframe waits until the NACK generator gives the hole up, or KEYFRAME_PATIENCE — one of
    another size too: the SFU switched layers, and the hole is the left layer's last frames,
    which our server resends for a while after a switch (skipping them at once froze the
    picture for their duration at a switch on a lossy link).

    aiortc's buffer also hands over at most one frame per packet received: the frames held
    behind a repaired hole then come out one per later packet, and on a layer of one packet per
    frame never catch up — every repair added a frame interval or more of latency for good
    (seen: 0.2-0.37 s after a few repairs). With ``sink``, every frame complete after a packet
    goes to it at once, in order (add() then returns no frame)."""

    def __init__(
        self,
        codec_name: Callable[[int], str | None],
        nacks: _RetryingNackGenerator | None = None,
        clock: Callable[[], float] = time.monotonic,
        sink: FrameSink | None = None,
    ) -> None:
        super().__init__(capacity=512, is_video=True)
        self._codec_name = codec_name  # by payload type
        self._nacks = nacks
        self._clock = clock
        self._sink = sink
        self._keyframe_asked = -math.inf
        self._keyframe_waiting: tuple[int, float] | None = None  # its seq, since when
        self.skipped = 0  # packets dropped waiting before a keyframe
        self.released = 0  # frames handed to the sink beside the one aiortc takes

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """aiortc sends a PLI when the first value is true: also when packets the NACK generator
        gave up still hold a frame back (at most every KEYFRAME_RETRY). An exception here would
        end aiortc's receive loop for good, and silently (aiortc logs to a NullHandler): a bug
        costs what the buffer held and a keyframe instead."""
        try:
            return self._add_and_release(packet)
        except Exception:
            _client_logger.exception("jitter buffer failed: emptied, asking for a keyframe")
            self.remove(self.capacity)
            self._origin = self._keyframe_waiting = None
            return True, None

    def _add_and_release(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = self._add(packet)
        if frame is not None and self._sink is not None:
            ready = [frame]
            while (more := self._remove_frame(packet.sequence_number)) is not None:
                ready.append(more)
            if len(ready) > 1:
                for each in ready:
                    self._sink(each, packet.payload_type)
                self.released += len(ready) - 1
                return self._keyframe_check(pli, frame), None
        return self._keyframe_check(pli, frame), frame

    def _keyframe_check(self, pli: bool, frame: JitterFrame | None) -> bool:
        nacks = self._nacks
        if nacks is not None and nacks.keyframe_wanted:
            nacks.keyframe_wanted = False
            now = self._clock()
            if (
                frame is None
                and self._origin is not None
                and now >= self._keyframe_asked + KEYFRAME_RETRY
            ):
                self._keyframe_asked = now
                pli = True
        return pli

    def _add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        name = self._codec_name(packet.payload_type)
        pli, frame = super().add(packet)
        origin = self._origin
        if frame is not None or origin is None or origin == packet.sequence_number:
            return pli, frame
        waiting = self._keyframe_waiting
        if waiting is None or not 0 < (waiting[0] - origin) & 0xFFFF < self.capacity:
            waiting = None  # none, reached (its hole was filled) or out of the buffer
            behind = (packet.sequence_number - origin) & 0xFFFF
            starts = name is not None and is_keyframe(name, packet.payload)
            if starts and behind < self.capacity:
                # of another size too (the SFU switched layers): it resends the layer it left
                waiting = (packet.sequence_number, self._clock())
        self._keyframe_waiting = waiting
        if waiting is None:
            return pli, frame
        keyframe, since = waiting
        behind = (keyframe - origin) & 0xFFFF
        if self._clock() - since < KEYFRAME_PATIENCE and not self._given_up(origin, behind):
            return pli, frame
        self._keyframe_waiting = None
        self.skipped += sum(1 for i in range(behind) if self._packets[(origin + i) % 512])
        self.remove(behind)
        return pli, self._remove_frame(keyframe)

    def _given_up(self, origin: int, count: int) -> bool:
        """Whether a packet missing among the ``count`` from ``origin`` is no longer asked for."""
        nacks = self._nacks
        if nacks is None:
            return True
        return any(
            self._packets[(origin + i) % 512] is None and (origin + i) & 0xFFFF not in nacks.pending
            for i in range(count)
        )


def recover_at_keyframes(pc: RTCPeerConnection) -> int:
    """Give the video receivers of ``pc`` that have aiortc's own jitter buffer one that skips to
    a keyframe past a hole (:class:`_RecoveringJitterBuffer`), and a NACK generator that asks
    again for what is still missing and then for a keyframe (:class:`_RetryingNackGenerator`);
    returns how many it replaced. Call after each remote description (receivers come with their
    transceivers)."""
    replaced = 0
    for transceiver in pc.getTransceivers():
        receiver: Any = transceiver.receiver
        if transceiver.kind != "video" or receiver is None:
            continue
        current = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
        if current is None or isinstance(current, _RecoveringJitterBuffer):
            continue
        if type(current) is not JitterBuffer:
            raise RuntimeError("aiortc's video receiver no longer keeps a JitterBuffer")

        def codec_name(payload_type: int, receiver: Any = receiver) -> str | None:
            codec = receiver._RTCRtpReceiver__codecs.get(payload_type)
            return None if codec is None else str(codec.name)

        nacks = receiver._RTCRtpReceiver__nack_generator
        if type(nacks) is not NackGenerator:
            raise RuntimeError("aiortc's video receiver no longer keeps a NackGenerator")
        retrying = _RetryingNackGenerator()
        receiver._RTCRtpReceiver__nack_generator = retrying
        receiver._RTCRtpReceiver__jitter_buffer = _RecoveringJitterBuffer(
            codec_name, retrying, sink=_decoder_sink(receiver)
        )
        replaced += 1
    return replaced


def _decoder_sink(receiver: Any) -> FrameSink:
    """What aiortc's receiver does with the frame its jitter buffer returns: its timestamp
    unwrapped by the receiver's mapper, then queued for the decoder thread with its codec."""
    codecs = receiver._RTCRtpReceiver__codecs
    mapper = receiver._RTCRtpReceiver__timestamp_mapper
    decoder_queue = receiver._RTCRtpReceiver__decoder_queue

    def sink(frame: JitterFrame, payload_type: int) -> None:
        codec = codecs.get(payload_type)
        if codec is None or not receiver._RTCRtpReceiver__decoder_thread:
            return
        frame.timestamp = mapper.map(frame.timestamp)
        decoder_queue.put((codec, frame))

    return sink


# --- ICE restart (RFC 8445 §9, RFC 8839 §4.4.1.1.1): server and client ---
#
# aioice 0.13 and aiortc 1.16 cannot restart ICE: an offer with new credentials is applied as
# if nothing changed. A restart here keeps the aioice Connection — its sockets, local
# candidates, the DTLS transport reading from its queue and our hooks on it — and starts a new
# ICE session on it: new local credentials, the peer's new ones, an empty check list, a new
# nomination. Until the new pair is nominated, what is sent goes on over the old one (aiortc's
# senders stop for good at the first "not connected"), and the SFU's C egress is moved to the
# new pair afterwards (MediaTransport.repath). DTLS and SRTP are untouched.

ICE_RESTART_TIMEOUT = 10.0


def ice_credentials(sdp: str) -> tuple[str, str] | None:
    """The (ufrag, pwd) a description gives its first m-line (or its session), if any."""
    ufrag = pwd = None
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:") and ufrag is None:
            ufrag = line.partition(":")[2].strip()
        elif line.startswith("a=ice-pwd:") and pwd is None:
            pwd = line.partition(":")[2].strip()
    return None if ufrag is None or pwd is None else (ufrag, pwd)


def _ice_transport(pc: RTCPeerConnection) -> Any:
    transceivers = pc.getTransceivers()
    if not transceivers:
        return None
    dtls: Any = transceivers[0].receiver.transport
    return None if dtls is None else dtls.transport


def ice_restart_offered(pc: RTCPeerConnection, sdp: str) -> bool:
    """Whether a remote offer restarts ICE: it changes the credentials in use (RFC 8839)."""
    transport = _ice_transport(pc)
    if transport is None or transport._connection.remote_username is None:
        return False
    offered = ice_credentials(sdp)
    connection = transport._connection
    return offered is not None and offered != (
        connection.remote_username,
        connection.remote_password,
    )


def ice_restart_pending(pc: RTCPeerConnection) -> bool:
    """Whether a restart begun here still waits for the peer's credentials (our restart
    offer is out, or was rolled back for the client's)."""
    transport = _ice_transport(pc)
    return (
        transport is not None
        and "recvfrom" in vars(transport._connection)
        and (transport._connection.remote_username is None)
    )


def begin_ice_restart(pc: RTCPeerConnection, *, controlling: bool) -> None:
    """Start a new ICE session on ``pc``'s (bundled) transport: new local credentials, no
    pairs; call before creating the offer (or before applying the peer's), then
    :func:`complete_ice_restart` once the peer's credentials are known."""
    transport = _ice_transport(pc)
    if transport is None:
        raise ValueError("no ICE transport to restart")
    connection: Any = transport._connection
    if connection._query_consent_task is not None:
        connection._query_consent_task.cancel()  # it would check the old session's pair
        connection._query_consent_task = None
    for pair in connection._check_list:
        if pair.task is not None:
            pair.task.cancel()
    # a restart begun again before the last one nominated a pair keeps the pair of before
    previous = dict(connection._nominated) or getattr(connection, "_pair_before_restart", {})
    connection._pair_before_restart = previous
    port: UdpPort | None = vars(connection).get("_sfu_udp_port")
    if port is not None:  # unused on the port; the old one no longer routes
        connection._local_username = port.reserve_ufrag(connection)
    else:
        connection._local_username = aioice.utils.random_string(4)
    connection._local_password = aioice.utils.random_string(22)
    connection.remote_username = connection.remote_password = None
    connection.ice_controlling = controlling
    connection._check_list = []
    connection._check_list_done = False
    connection._check_list_state = asyncio.Queue()
    connection._early_checks.clear()
    connection._early_checks_done = False
    connection._nominated = {}
    connection._nominating = set()
    connection._remote_candidates = []
    connection._remote_candidates_end = False
    transport.iceGatherer._remote_candidates_end = False
    transport._role_set = True  # the roles of this session are the ones given here

    async def sendto(data: bytes, component: int) -> None:
        # the old pair carries on until the new session nominates one; with none (its socket
        # went with the host's address), the packet is lost as on a dead link: aiortc's
        # senders would stop for good at a "not connected"
        pair = connection._nominated.get(component) or previous.get(component)
        if pair is not None and not pair.protocol.transport.is_closing():
            await pair.protocol.send_data(data, pair.remote_addr)

    async def recvfrom() -> tuple[bytes, int]:
        # aioice refuses to receive while nothing is nominated; the DTLS transport's reader
        # would take that for the end of the connection
        result = await connection._queue.get()
        if result is None:
            raise ConnectionError("Connection lost while receiving data")
        return cast(tuple[bytes, int], result)

    connection.sendto, connection.recvfrom = sendto, recvfrom
    first: _FirstConnect | None = getattr(connection, "_first_connect", None)
    if first is not None:
        first.take_over()  # the first connect now waits for this session's outcome


async def regather_ice(pc: RTCPeerConnection) -> None:
    """Gather new local candidates for a restart begun with :func:`begin_ice_restart`: the
    host's addresses changed (a network change), so the old sockets, bound to addresses that
    may be gone, are closed, and new ones are bound to the addresses there are now. On the
    shared port, closing only unregisters the connection's protocols and gathering makes new
    ones on the same sockets."""
    transport = _ice_transport(pc)
    connection: Any = transport._connection
    old, connection._protocols = connection._protocols, []
    for protocol in old:
        await protocol.close()
    connection._local_candidates = []
    connection._local_candidates_start = connection._local_candidates_end = False
    await connection.gather_candidates()


async def complete_ice_restart(pc: RTCPeerConnection, remote: tuple[str, str]) -> None:
    """Run the new session's checks with the peer's credentials ``remote`` until a pair is
    nominated; ConnectionError (or TimeoutError) when none is. The media transport, if any,
    then sends on the new pair."""
    transport = _ice_transport(pc)
    connection: Any = transport._connection
    connection.remote_username, connection.remote_password = remote
    first: _FirstConnect | None = getattr(connection, "_first_connect", None)
    try:
        async with asyncio.timeout(ICE_RESTART_TIMEOUT):
            await aioice.ice.Connection.connect(connection)  # aioice's: ours may wrap it
    except (ConnectionError, TimeoutError):
        if first is not None:
            first.settle(ok=False)
        raise
    del connection.sendto, connection.recvfrom  # aioice's own again: a pair is nominated
    connection._pair_before_restart = {}
    if first is not None:
        first.settle(ok=True)
    media = getattr(pc, "media_transport", None)
    if media is not None:
        media.repath()


class _FirstConnect:
    """A first ICE connect that an ICE restart may take over (see :func:`own_ice_connect`)."""

    def __init__(self) -> None:
        self.taken_over = asyncio.Event()
        self.settled = asyncio.Event()
        self.ok = False
        self.since = time.monotonic()

    def take_over(self) -> None:
        self.taken_over.set()
        self.since = time.monotonic()  # each restart gets its own time

    def settle(self, *, ok: bool) -> None:
        self.ok = ok
        self.settled.set()


def own_ice_connect(pc: RTCPeerConnection) -> None:
    """Let an ICE restart take over a first connection that has not come up yet.

    aiortc starts ICE once (``RTCIceTransport.start`` awaits aioice's ``connect``), and a
    restart begun before that returns would leave it waiting forever on the old session's
    check list. Here the first ``connect`` is ours: it runs aioice's, and when
    :func:`begin_ice_restart` starts a new session meanwhile, it stops that attempt and
    returns (or fails) with the restart — so a connection that does not come up can be
    retried with new credentials (RFC 8445 §9) before anyone is told it failed. Call before
    the first remote description is applied (idempotent)."""
    transport = _ice_transport(pc)
    if transport is not None:
        _own_first_connect(transport._connection)


def _own_first_connect(connection: Any) -> None:
    if "connect" in vars(connection) or connection._check_list_done:
        return

    async def connect() -> None:
        first = connection._first_connect = _FirstConnect()
        attempt = asyncio.ensure_future(aioice.ice.Connection.connect(connection))
        attempt.add_done_callback(lambda task: task.cancelled() or task.exception())
        taken_over = asyncio.ensure_future(first.taken_over.wait())
        try:
            await asyncio.wait({attempt, taken_over}, return_when=asyncio.FIRST_COMPLETED)
            if not first.taken_over.is_set():
                return attempt.result()
            attempt.cancel()  # a restart began: its session is the one that counts
            while not first.settled.is_set():
                # no restart may leave aiortc's start waiting forever: a closed connection,
                # or one whose restart never got the peer's answer, fails as aioice's would
                waited = time.monotonic() - first.since
                if connection._closing or waited > 2 * ICE_RESTART_TIMEOUT:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await first.settled.wait()
            if not first.ok:
                raise ConnectionError("ICE negotiation failed")
        finally:
            attempt.cancel()
            taken_over.cancel()
            connection._first_connect = None
            del connection.connect  # later restarts run their own checks

    connection.connect = connect


# --- client side: ICE servers a server hands out (joined.iceServers) ---


def set_ice_servers(pc: RTCPeerConnection, servers: Sequence[RTCIceServer]) -> None:
    """Use ``servers`` (STUN/TURN) for ``pc``'s ICE: what a browser's ``setConfiguration`` does
    before the first transceiver. aiortc has no setConfiguration: it reads its configuration's
    ``iceServers`` when it creates a transport's ICE gatherer (the first transceiver's, with
    max-bundle the only one), so they must be set before that; ValueError after."""
    if pc.getTransceivers() or pc.sctp is not None:
        raise ValueError("the peer connection has its transport already")
    name = "_RTCPeerConnection__configuration"
    configuration: RTCConfiguration = getattr(pc, name)
    setattr(pc, name, dataclasses.replace(configuration, iceServers=list(servers)))


def selected_candidate_types(pc: RTCPeerConnection) -> tuple[str, str] | None:
    """(local, remote) candidate types of the pair ICE nominated (``host``, ``srflx``,
    ``prflx``, ``relay``: RFC 8445 §5.1.1), or None before there is one."""
    transport = _ice_transport(pc)
    if transport is None:
        return None
    pair = transport._connection._nominated.get(1)
    if pair is None:
        return None
    return str(pair.local_candidate.type), str(pair.remote_candidate.type)
