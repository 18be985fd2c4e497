"""Rid simulcast from the Python client: one video source sent as several encodings on one
m-line, as a browser does (RFC 8853 simulcast, RFC 8851 rid, RFC 8852 RTP stream ids).

Each layer is its own RTP stream (SSRC) with its own sequence numbers, timestamps, VP8 picture
ids and packet history, and its own RTX stream when RTX is negotiated (RFC 4588). Until the
answerer acknowledges an SSRC in a receiver report, its packets carry the mid and the rid (the
RTX packets: the repaired rid); afterwards they do not, as libwebrtc does, so the server must
latch SSRCs (``always_send_rid=True`` keeps them in every packet).

RTCP for a layer's SSRC acts on that layer only: PLI and FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1)
make its next frame a keyframe, NACK (RFC 4585 §6.2.1) resends from its history. A layer can
be turned off and on (:meth:`SimulcastPublisher.set_active`, which the server's
``publisherLayers`` event drives through :meth:`set_layers`); it resumes with a keyframe.

aiortc cannot send simulcast: the transceiver's aiortc sender sends nothing
(``sfu.media.aiortc_bridge``), the client's offer is edited (``sfu_client.simulcast_sdp``) and
the packets (``sfu_client.simulcast_layer``) are written to the DTLS transport here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence

from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport

from sfu.media.aiortc_bridge import add_external_send_transceiver, send_srtp, tap_rtcp
from sfu.rtp import rtcp
from sfu_client.simulcast_layer import OutboundLayer, PacketWriter
from sfu_client.simulcast_media import (
    EncodedLayers,
    LayerSize,
    LayerSource,
    PreEncodedLayers,
)
from sfu_client.simulcast_sdp import (
    Negotiated,
    check_rids,
    choose_extension_ids,
    parse_simulcast,
    simulcast_answer,
    simulcast_offer,
)

logger = logging.getLogger(__name__)

#: what a page passing three encodings low to high gets from Chromium: a=simulcast:send q;h;f
DEFAULT_LAYERS = (LayerSize("q", 4.0), LayerSize("h", 2.0), LayerSize("f", 1.0))
REPORT_INTERVAL = 1.0  # seconds between sender reports, randomised by ±50 % (RFC 3550 §6.2)


class SimulcastPublisher:
    """Sends one video source as rid simulcast on one m-line of an aiortc peer connection.

    ``source`` is a video track (each frame is encoded once per layer, sized by ``layers``) or
    :class:`~sfu_client.simulcast_media.PreEncodedLayers` (sent as they are; its rids are the
    layers). ``fps`` only sizes the default bitrates. :class:`~sfu_client.SfuClient` drives it
    (``publish_simulcast``); on another connection: :meth:`attach` before the offer, pass the
    offer through :meth:`offer` and the answer to :meth:`apply_answer`.
    """

    def __init__(
        self,
        source: MediaStreamTrack,
        layers: Sequence[LayerSize] = DEFAULT_LAYERS,
        *,
        fps: float = 30.0,
        always_send_rid: bool = False,
    ) -> None:
        self.track = source
        self._frames: LayerSource
        if isinstance(source, PreEncodedLayers):
            rids = source.rids
            self._frames = source
        else:
            rids = tuple(layer.rid for layer in layers)
            self._frames = EncodedLayers(source, layers, fps)
        check_rids(rids)
        self.layers: dict[str, OutboundLayer] = {rid: OutboundLayer(rid) for rid in rids}
        self.always_send_rid = always_send_rid
        self.transceiver: RTCRtpTransceiver | None = None
        #: the remote's view of our layers once an answer was applied (None before)
        self.negotiated: Negotiated | None = None
        self.closed = False
        self._extension_ids: dict[str, int] = {}
        self._writer: PacketWriter | None = None
        self._cname = ""
        self._dtls: RTCDtlsTransport | None = None
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._untap: list[Callable[[], None]] = []

    @property
    def rids(self) -> tuple[str, ...]:
        """The layers in the order the offer lists them."""
        return tuple(self.layers)

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid if self.transceiver is not None else None

    # --- negotiation ---

    def attach(self, pc: RTCPeerConnection) -> RTCRtpTransceiver:
        """Add the sendonly transceiver (VP8 and its RTX only); negotiate it next."""
        if self.transceiver is not None:
            raise RuntimeError("this simulcast publisher is already attached")
        transceiver = add_external_send_transceiver(pc, self.track, self._on_started, self.close)
        codecs = RTCRtpSender.getCapabilities("video").codecs
        vp8 = [c for c in codecs if c.name.lower() == "vp8"]
        rtx = [c for c in codecs if c.name.lower() == "rtx"]
        transceiver.setCodecPreferences(vp8 + rtx)
        self.transceiver = transceiver
        return transceiver

    def offer(self, sdp: str) -> str:
        """Our offer as sent: this m-line offers the layers (unchanged before it has a mid)."""
        mid = self.mid
        if mid is None:
            return sdp
        self._extension_ids = choose_extension_ids(sdp, self._extension_ids)
        return simulcast_offer(sdp, mid, self.rids, self._extension_ids)

    def answer(self, answer: str, offer: str) -> str:
        """Our answer to a remote offer, as sent (see ``simulcast_sdp.simulcast_answer``)."""
        mid = self.mid
        if mid is None or f"a=mid:{mid}\r" not in answer + "\r":
            return answer
        return simulcast_answer(answer, offer, mid, self.rids)

    def apply_answer(self, sdp: str) -> None:
        """Take the remote answer to our offer: which layers to send, payload types, ids.

        Without simulcast in the answer only the first layer is sent, without rid (what
        Chromium does). Raises ValueError if the answer leaves nothing to send VP8 with.
        """
        mid = self.mid
        if mid is None or self.closed:
            return
        negotiated = parse_simulcast(sdp, mid, "recv", self.rids)
        writer = PacketWriter(mid, negotiated, with_rid=bool(negotiated.rids))
        sent = negotiated.rids or self.rids[:1]
        for rid, layer in self.layers.items():
            was = layer.sending
            layer.negotiated = rid in sent
            if rid in negotiated.paused:
                layer.active = False
            if layer.sending and not was:
                layer.keyframe_wanted = True
        self.negotiated, self._writer = negotiated, writer
        logger.debug("simulcast m-line %s sends %s", mid, [r for r in sent if r in self.layers])
        self._start()

    # --- control ---

    def set_active(self, rid: str, active: bool) -> None:
        """Turn one layer on or off (a layer turned on starts with a keyframe)."""
        layer = self._layer(rid)
        if active and not layer.active:
            layer.keyframe_wanted = True
        layer.active = active

    def set_layers(self, layers: Mapping[str, bool]) -> None:
        """Apply a ``publisherLayers`` event: rid -> active; rids we do not send are ignored."""
        for rid, active in layers.items():
            if rid in self.layers:
                self.set_active(rid, active)

    def request_keyframe(self, rid: str) -> None:
        """Make the next frame of layer ``rid`` a keyframe (as a PLI for its SSRC does)."""
        self._layer(rid).request_keyframe()

    def _layer(self, rid: str) -> OutboundLayer:
        layer = self.layers.get(rid)
        if layer is None:
            raise ValueError(f"no simulcast layer {rid!r}; the layers are {list(self.layers)}")
        return layer

    # --- sending ---

    def _on_started(self, mid: str, cname: str) -> None:
        if self.transceiver is None:
            return
        self._cname = cname
        self._dtls = self.transceiver.sender.transport
        self._start()

    def _start(self) -> None:
        """Start once both the transport is up and an answer was applied."""
        dtls = self._dtls
        if self._tasks or self.closed or dtls is None or self._writer is None:
            return
        self._untap.append(tap_rtcp(dtls, self._on_rtcp))
        name = f"sfu-client-simulcast-{self.mid}"
        self._tasks = [
            asyncio.create_task(self._run_media(), name=f"{name}-media"),
            asyncio.create_task(self._run_writer(dtls), name=f"{name}-writer"),
            asyncio.create_task(self._run_reports(), name=f"{name}-reports"),
        ]

    async def _run_media(self) -> None:
        try:
            while True:
                wanted = {
                    r: layer.keyframe_wanted for r, layer in self.layers.items() if layer.sending
                }
                ticks, frames = await self._frames.next_frames(wanted)
                writer = self._writer
                if writer is None:
                    continue
                for rid, frame in frames.items():
                    layer = self.layers[rid]
                    if layer.sending:  # not turned off while it was encoded
                        for packet in layer.packetize(frame, ticks, writer):
                            self._outbox.put_nowait(packet)
        except MediaStreamError:
            logger.debug("simulcast source of m-line %s ended", self.mid)
        except Exception:  # an encoder failing must say so, not end the layers silently
            logger.exception("simulcast m-line %s stopped sending", self.mid)

    async def _run_writer(self, dtls: RTCDtlsTransport) -> None:
        while True:
            await send_srtp(dtls, await self._outbox.get())

    async def _run_reports(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL * (0.5 + random.random()))
            now = time.time()
            for layer in self.layers.values():
                report = layer.sender_report(now) if layer.sending else None
                if report is not None:
                    cname = rtcp.SourceDescription([(layer.ssrc, self._cname)])
                    self._outbox.put_nowait(rtcp.serialize([report, cname]))

    def _on_rtcp(self, data: bytes) -> None:
        """RTCP from the answerer: feedback and reports for our layers' SSRCs."""
        try:
            packets = rtcp.parse_compound(data)
        except ValueError:
            return
        by_ssrc = {layer.ssrc: layer for layer in self.layers.values()}
        for packet in packets:
            if isinstance(packet, rtcp.Pli):
                if (layer := by_ssrc.get(packet.media_ssrc)) is not None:
                    layer.request_keyframe()
            elif isinstance(packet, rtcp.Fir):
                for ssrc, seq in packet.entries:
                    if (layer := by_ssrc.get(ssrc)) is not None:
                        layer.on_fir(seq)
            elif isinstance(packet, rtcp.Nack):
                if (layer := by_ssrc.get(packet.media_ssrc)) is not None:
                    self._retransmit(layer, packet.lost)
            elif isinstance(packet, rtcp.SenderReport | rtcp.ReceiverReport):
                self._acknowledge([block.ssrc for block in packet.reports])

    def _retransmit(self, layer: OutboundLayer, lost: Sequence[int]) -> None:
        writer = self._writer
        if writer is None or not layer.sending:
            return
        for seq in lost:
            packet = layer.retransmission(seq, writer)
            if packet is not None:
                self._outbox.put_nowait(packet)

    def _acknowledge(self, ssrcs: Sequence[int]) -> None:
        if self.always_send_rid:
            return
        for layer in self.layers.values():
            layer.acked = layer.acked or layer.ssrc in ssrcs
            layer.rtx_acked = layer.rtx_acked or layer.rtx_ssrc in ssrcs

    async def close(self) -> None:
        """Stop sending (idempotent); the connection closing calls it too."""
        if self.closed:
            return
        self.closed = True
        for untap in self._untap:
            untap()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        self._frames.close()
