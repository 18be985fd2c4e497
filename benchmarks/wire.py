"""Raw RTP on an aiortc connection: the one benchmark module that touches aiortc/aioice internals.

The load generator must cost far less than the forwarder it measures, so it bypasses aiortc's
media path on both ends (versions pinned in pyproject.toml, like sfu/media/aiortc_bridge.py):

* :class:`RawSender` protects a ready-made RTP packet with the connection's SRTP session and
  writes it to the nominated ICE pair's socket: no encoder, no packetizer, no await;
* :class:`RawReceiver` takes SRTP packets off the ICE socket itself (before aioice's STUN parse,
  its queue and aiortc's DTLS receive task), unprotects them and hands them to a callback. RTCP,
  STUN and DTLS still take aiortc's normal path, so ICE consent, DTLS and RTCP keep working.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtcdtlstransport import RTCDtlsTransport

OnPacket = Callable[[bytes, int], None]  # decrypted RTP packet, arrival time (monotonic ns)


def dtls_transport(pc: RTCPeerConnection) -> RTCDtlsTransport:
    """The connection's (max-bundle, so only) DTLS transport, once a description created it."""
    for transceiver in pc.getTransceivers():
        transport: RTCDtlsTransport | None = transceiver.receiver.transport
        if transport is not None:
            return transport
    raise RuntimeError("the connection has no DTLS transport yet")


async def wait_connected(dtls: RTCDtlsTransport, timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while dtls.state != "connected":
        if dtls.state in ("failed", "closed") or time.monotonic() > deadline:
            raise TimeoutError(f"DTLS did not connect within {timeout} s (state {dtls.state})")
        await asyncio.sleep(0.01)


def negotiated_payload_type(transceiver: RTCRtpTransceiver, codec: str = "VP8") -> int:
    codecs: list[Any] = transceiver._codecs
    for c in codecs:
        if c.name.upper() == codec:
            return int(c.payloadType)
    raise RuntimeError(f"{codec} was not negotiated: {[c.name for c in codecs]}")


def sender_ssrc(transceiver: RTCRtpTransceiver) -> int:
    return int(transceiver.sender._ssrc)


class RawSender:
    """Sends ready-made RTP packets on a connected DTLS transport (SRTP protect + sendto)."""

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        private: Any = dtls
        self._srtp = private._tx_srtp
        pair = private.transport._connection._nominated.get(1)
        if self._srtp is None or pair is None:
            raise RuntimeError("the DTLS transport is not connected")
        self._sendto = pair.protocol.transport.sendto
        self._address = pair.remote_addr
        self.packets = 0

    def send(self, packet: bytes) -> None:
        self._sendto(self._srtp.protect(packet), self._address)
        self.packets += 1


class RawReceiver:
    """Delivers every RTP packet arriving on a DTLS transport to ``on_packet``, decrypted.

    Takes effect at once on aiortc's own path (so no packet ever reaches an RTP receiver and its
    decoder); call :meth:`hook_sockets` until it returns True to move the hook down to the ICE
    sockets once aioice has created them (after the local description is set).
    """

    def __init__(self, dtls: RTCDtlsTransport, on_packet: OnPacket) -> None:
        private: Any = dtls
        self._dtls = private
        self._on_packet = on_packet
        self._hooked: set[int] = set()
        self.rejected = 0  # packets SRTP refused (replayed, too old, not authentic)
        private._handle_rtp_data = self._handle_rtp_data

    async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        self._on_packet(data, time.monotonic_ns())

    def hook_sockets(self) -> bool:
        protocols: list[Any] = self._dtls.transport._connection._protocols
        for protocol in protocols:
            if id(protocol) not in self._hooked:
                self._hooked.add(id(protocol))
                protocol.datagram_received = self._fast_path(protocol.datagram_received)
        return bool(self._hooked)

    def _fast_path(self, slow_path: Callable[[bytes, Any], None]) -> Callable[[bytes, Any], None]:
        dtls = self._dtls
        on_packet = self._on_packet
        monotonic_ns = time.monotonic_ns

        def datagram_received(data: bytes, addr: Any) -> None:
            # RFC 7983: 128-191 is RTP/RTCP; payload types 192-223 are RTCP (RFC 5761)
            if 127 < data[0] < 192 and not 191 < data[1] < 224 and dtls._rx_srtp is not None:
                now = monotonic_ns()
                try:
                    plain = dtls._rx_srtp.unprotect(data)
                except Exception:  # pylibsrtp.Error
                    self.rejected += 1
                    return
                on_packet(plain, now)
            else:
                slow_path(data, addr)

        return datagram_received
