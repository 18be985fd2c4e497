"""Egress of one published track to one subscriber.

A down-track rewrites each packet for its subscriber's connection — SSRC, payload type, sequence
number, timestamp and header extensions — and sends it. The rewriting state lives in an
:class:`OutgoingStream`, which belongs to the subscriber's m-line and outlives any one down-track:
when the m-line is reused for another track, the subscriber keeps seeing one continuous stream.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from sfu.media.layer import IngressPacket, LayerReceiver
from sfu.media.layer_selector import LayerTarget
from sfu.media.munger import RtpMunger
from sfu.media.params import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_TRANSPORT_CC,
    MediaParams,
)
from sfu.media.playout_delay import URI_PLAYOUT_DELAY, PlayoutDelayPolicy, element
from sfu.media.receiver import TrackReceiver
from sfu.media.reports import ntp_timestamp, rtt_from_report
from sfu.media.retransmit_budget import RetransmitBudget
from sfu.media.vp8_rewriter import Vp8Rewriter
from sfu.rtp.header import build_extension_block, padding_packet, rewrite, wrap_rtx
from sfu.rtp.rtcp import ReportBlock, SenderReport
from sfu.rtp.vp8 import Vp8Descriptor

_log = structlog.get_logger("sfu.downtrack")

_AS_THEY_ARE = (-1, -1, -1)
#: How long a keyframe of the layer a down-track is leaving is held back for the target's (s):
#: libwebrtc's keyframes of all layers arrive within a few milliseconds of each other.
HOLD_LIMIT = 0.04
#: Packets a down-track refuses in a row (forwarding none between) before it logs that it stalled.
STALL_REFUSALS = 50
#: For this long (s) after a layer switch, NACKs for packets of the layer left are still
#: answered: a packet lost just before the switch would otherwise hold the subscriber's picture
#: until the new layer's keyframe gets past the hole (a few round trips on a lossy link).
PREVIOUS_LAYER_REPAIR = 1.0
#: Shortest time between two keyframe requests of one subscriber passed on to the publisher
#: (a decoder that lost its picture asks again after a round trip or so; a hostile one floods).
SUBSCRIBER_KEYFRAME_INTERVAL = 0.5


class PacketSink(Protocol):
    def send_rtp(self, packet: bytes) -> None: ...

    def send_rewritten(
        self,
        data: bytes,
        payload_start: int,
        payload_type: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        extensions: bytes,
        value_at: int,
        value: bytes,
        /,
    ) -> None:
        """Send what :func:`sfu.rtp.header.rewrite` would make of these (without making it)."""

    def send_vp8(
        self,
        data: bytes,
        payload_start: int,
        payload_type: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        extensions: bytes,
        value_at: int,
        value: bytes,
        picture_id: int,
        tl0picidx: int,
        keyidx: int,
        /,
    ) -> None:
        """As ``send_rewritten``, with these VP8 descriptor fields (-1: as they are)."""

    @property
    def connected(self) -> bool: ...


class OutgoingStream:
    """One SSRC the server sends on one subscriber m-line, continuous across reuse."""

    def __init__(self, params: MediaParams, initial_seq: int, initial_ts: int) -> None:
        self.params = params
        self.munger = RtpMunger(initial_seq, initial_ts, history=params.kind == "video")
        self.last_sent: float | None = None  # monotonic time of the last packet sent
        self.rtx_seq = initial_seq ^ 0x5A5A
        self.packets_sent = 0
        self.octets_sent = 0
        self.retransmissions = 0
        self.retransmit_budget = RetransmitBudget()
        self.layer_switches = 0  # simulcast: times it went on with another layer of its track
        self.vp8: Vp8Rewriter | None = None  # VP8 simulcast: picture ids etc. across layers


@dataclass(frozen=True, slots=True)
class _LayerLeft:
    """What a retransmission of a packet of the layer a down-track left needs: the layer (its
    packet history), the munger's source number and timestamp offset then, and for VP8
    simulcast the descriptor rewriter as it was (its picture ids)."""

    layer: LayerReceiver
    generation: int
    ts_offset: int
    vp8: Vp8Rewriter | None
    until: float


class DownTrack:
    def __init__(
        self,
        source: TrackReceiver,
        stream: OutgoingStream,
        sink: PacketSink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.stream = stream
        self.sink = sink
        self._clock = clock
        self._ssrc = stream.params.local_ssrc
        self._clock_rate = source.codec.clock_rate
        self.playout_delay = PlayoutDelayPolicy()  # the floor asked of a lossy subscriber
        self.update(stream.params)
        #: the layer forwarded, and the one waited for (its next keyframe starts it); video waits
        #: for a keyframe, audio for its first packet
        self.layer: LayerReceiver | None = None
        self.target: LayerReceiver | None = None
        #: what the subscriber's layer selection chose last (video), and the bit/s this track
        #: could have on the subscriber's link (None: no limit known)
        self.choice: LayerTarget | None = None
        self.allowance: float | None = None
        #: the current layer's keyframe held back during a switch (on_leaving_packet)
        self._held: list[IngressPacket] | None = None
        self._cut = False  # the current layer was left before the target started (at_once)
        self._left: _LayerLeft | None = None  # the layer switched from, for NACKs a while
        self._ts_offset: int | None = None  # outgoing ts - source ts, for sender reports
        self.rtt: float | None = None
        self.fraction_lost = 0
        self.remb_bitrate: int | None = None
        self.closed = False
        self._created = clock()
        self._keyframe_asked = -math.inf  # when this subscriber's last PLI/FIR was passed on
        self._refusals = 0  # packets refused since the stream last sent one
        self._refused_at_sent = 0  # stream.packets_sent when that run of refusals began

    def update(self, params: MediaParams) -> None:
        """Take what the latest negotiation settled (a peer may renumber payload types)."""
        codec = params.primary
        if codec is None or not codec.same_format(self.source.codec):
            raise ValueError(f"m-line {params.mid} cannot carry {self.source.codec.name}")
        self.stream.params = params
        self._payload_type = codec.payload_type
        self._rtx_payload_type = codec.rtx_payload_type
        self._write_extensions()

    def _write_extensions(self) -> None:
        """(Re)build the extension blocks: at negotiation and when the playout floor moves
        (about once a second at most), never per packet."""
        floor = self.playout_delay.floor
        writer = self._extensions = _ExtensionWriter(
            self.stream.params, None if floor is None else element(floor)
        )
        # read per packet: kept on the down-track itself
        self._ext_static = writer.static
        self._ext_template = writer.template
        self._ext_value_at = writer.value_at
        self._ext_abs_send_time = writer.carries_abs_send_time

    # --- forward path ---

    def forward(self, packet: IngressPacket) -> None:
        # the hot path: once per packet per subscriber, so everything is inlined here
        stream = self.stream
        descriptor = packet.vp8  # parsed on VP8 simulcast tracks only
        if descriptor is not None:
            fields = self._descriptor_fields(descriptor)
            if fields is None:  # a temporal layer not forwarded: it leaves no gap
                stream.munger.drop(packet.ext_seq)
                return
            picture_id, tl0picidx, keyidx = fields
        mapped = stream.munger.forward(packet.ext_seq, packet.timestamp)
        if mapped is None:
            self._refused(packet)
            return
        seq, ts = mapped
        if self._ts_offset is None:
            self._ts_offset = (ts - packet.timestamp) & 0xFFFFFFFF
        value = packet.abs_send_time if self._ext_abs_send_time else packet.audio_level
        if value:
            extensions, value_at = self._ext_template, self._ext_value_at
        else:
            extensions, value_at, value = self._ext_static, -1, b""
        if descriptor is None:
            self.sink.send_rewritten(
                packet.data,
                packet.payload_start,
                self._payload_type,
                seq,
                ts,
                self._ssrc,
                extensions,
                value_at,
                value,
            )
        else:
            self.sink.send_vp8(
                packet.data,
                packet.payload_start,
                self._payload_type,
                seq,
                ts,
                self._ssrc,
                extensions,
                value_at,
                value,
                picture_id,
                tl0picidx,
                keyidx,
            )
        stream.last_sent = packet.arrival
        stream.packets_sent += 1
        stream.octets_sent += packet.payload_size

    def _descriptor_fields(self, descriptor: Vp8Descriptor) -> tuple[int, int, int] | None:
        """VP8 picture id, TL0PICIDX and KEYIDX to write (-1: as they are), or None to drop the
        packet; a simulcast down-track keeps them continuous (:mod:`sfu.media.vp8_downtrack`)."""
        return _AS_THEY_ARE

    def set_layer(self, layer: LayerReceiver | None, now: float, *, at_once: bool = False) -> None:
        """Forward ``layer`` from its next keyframe on (None: pause), the current one until then
        — or, ``at_once``, nothing until then: a move down because the link is congested, where
        the current layer's packets would only fill the queues the new keyframe must cross.

        Never a frame of a layer not chosen: the current layer stops when the target starts, and
        a target given up (another chosen while waiting) is left before it sent anything.
        """
        if (layer is not None and layer is self.target) or (
            layer is self.layer and self.target is None
        ):
            return  # (a pause of a forwarding down-track: its target is None too, not a no-op)
        _log.debug(
            "down-track target",
            track=self.source.info.track_id,
            ssrc=self._ssrc,
            layer=None if self.layer is None else self.layer.rid,
            target=None if layer is None else layer.rid,
            paused=layer is None,
            switches=self.stream.layer_switches,
        )
        if self.target is not None:
            self.target.unwait(self)
            self.target = None
        current = self.layer
        if layer is None:
            self._held = None
            if current is not None:
                current.detach(self)
                self.layer = None
            return
        if current is not None and self in current.leaving:
            current.leaving.remove(self)
            self._release()
        if layer is current:
            return  # back to the current layer: the switch it waited for is off
        if at_once and current is not None:
            self._remember_left(current, now)
            current.detach(self)
            self.layer, self._held, current = None, None, None
            self._cut = True  # the target's start is a layer switch all the same
        self.target = layer
        if current is not None:
            current.leaving.append(self)
        layer.wait(self, now)

    def on_leaving_packet(self, layer: LayerReceiver, packet: IngressPacket) -> None:
        """A packet of the layer this down-track forwards while it waits for another (before
        the layer forwards it to its ``down_tracks``).

        A keyframe of the layer being left is held back, a frame at most, for HOLD_LIMIT: the
        publisher answers the keyframe request for the target with keyframes on every layer
        (libwebrtc encodes them together), the old layer's first. Sent, it would reach the
        subscriber a few milliseconds before the target's, and Chromium then shows the old
        frame and skips the new one (the first frame of the new layer shown is the next one).
        Dropped when the target's keyframe starts, sent late if it does not come in time.
        """
        held = self._held
        if held is None:
            if packet.keyframe and self in layer.down_tracks:
                layer.down_tracks.remove(self)
                held = self._held = [packet]
                layer.call_later(HOLD_LIMIT, lambda: self._release(held))
            return
        if packet.timestamp == held[0].timestamp:
            held.append(packet)
        else:
            self._release()  # the next frame: the held one goes first, then this (the layer's)

    def _release(self, only: list[IngressPacket] | None = None) -> None:
        """Send the held frame after all (``only``: if it is still that one), and go on."""
        held, layer = self._held, self.layer
        if held is None or (only is not None and held is not only):
            return
        self._held = None
        if layer is not None and not self.closed:
            layer.down_tracks.append(self)
            for packet in held:
                self.forward(packet)

    def set_temporal_layer(self, layer: int | None) -> None:
        """Forward temporal layers up to ``layer`` (None: all); only codecs that have them."""

    def begin(self, layer: LayerReceiver, packet: IngressPacket) -> bool:
        """``layer``'s packet ``packet`` can start this down-track: go on with it, if connected.

        The caller (the layer) forwards ``packet`` next. Sequence numbers go on from the last
        one sent; the timestamp by the wall-clock time since (the layers of a simulcast track
        share a capture clock but not their RTP timestamps' origins).
        """
        if not self.sink.connected:
            return False
        previous = self.layer
        if previous is not None:
            previous.detach(self)
        if previous is not None or self._cut:
            self.stream.layer_switches += 1
            self._cut = False
        self._held = None  # the old layer's keyframe, never sent (on_leaving_packet)
        self.layer, self.target = layer, None
        layer.down_tracks.append(self)
        stream = self.stream
        if previous is not None:
            self._remember_left(previous, packet.arrival)
        gap = 0
        if stream.last_sent is not None:
            gap = int((packet.arrival - stream.last_sent) * self._clock_rate)
        stream.munger.switch_source(packet.ext_seq, packet.timestamp, gap)
        self._ts_offset = None  # for sender reports: this layer's RTP clock
        _log.debug(
            "down-track started" if previous is None else "down-track switched layer",
            track=self.source.info.track_id,
            ssrc=self._ssrc,
            pt=self._payload_type,
            mid=self.stream.params.mid,
            rid=layer.rid,
            previous=None if previous is None else previous.rid,
            size=None if layer.frame_size is None else "{}x{}".format(*layer.frame_size),
            switches=stream.layer_switches,
            waited=round(packet.arrival - self._created, 3),
        )
        return True

    def _refused(self, packet: IngressPacket) -> None:
        """The munger could not place ``packet``; once nothing else gets through, say so.

        A source whose numbers jumped ahead of what it sends (packets of another stream fed to
        it) leaves every later packet behind: the track then stops without any other sign.
        """
        sent = self.stream.packets_sent
        if sent != self._refused_at_sent:
            self._refused_at_sent, self._refusals = sent, 0
        self._refusals += 1
        if self._refusals == STALL_REFUSALS:
            _log.info(
                "down-track stalled: its source's packets are refused",
                track=self.source.info.track_id,
                ssrc=self._ssrc,
                mid=self.stream.params.mid,
                refused=self._refusals,
                ext_seq=packet.ext_seq,
            )

    def _remember_left(self, layer: LayerReceiver, now: float) -> None:
        """``layer`` stops being forwarded now: answer NACKs for its packets a while longer."""
        if layer.history is not None:
            munger = self.stream.munger
            self._left = _LayerLeft(
                layer,
                munger.generation,
                munger.ts_offset,
                self._resend_state(),
                now + PREVIOUS_LAYER_REPAIR,
            )

    def _resend_state(self) -> Vp8Rewriter | None:
        """What a retransmission of the current source needs besides the munger (VP8: the
        descriptor rewriter), copied before a switch to another source."""
        return None

    def _rewrite(
        self, packet: IngressPacket, seq: int, ts: int, vp8: Vp8Rewriter | None = None
    ) -> bytes:
        block = self._extensions.block(packet)
        return rewrite(
            packet.data, packet.payload_start, self._payload_type, seq, ts, self._ssrc, block
        )

    # --- feedback from the subscriber ---

    def on_nack(self, lost: list[int]) -> None:
        """Retransmit what the subscriber lost, from the publisher's history (RFC 4585 §6.2.1);
        for PREVIOUS_LAYER_REPAIR after a layer switch, packets of the layer left too."""
        layer, left = self.layer, self._left
        history = None if layer is None else layer.history
        stream = self.stream
        munger, budget, now = stream.munger, stream.retransmit_budget, self._clock()
        if left is not None and now > left.until:
            left = self._left = None
        for seq in lost:
            found = munger.source_packet(seq)
            if found is None:
                continue  # too old
            generation, source_seq = found
            if generation == munger.generation and history is not None:
                packet = history.get(source_seq)
                mapped = None if packet is None else munger.forward(source_seq, packet.timestamp)
                if packet is None or mapped is None or mapped[0] != seq:
                    continue
                ts, vp8 = mapped[1], None
            elif left is not None and generation == left.generation:
                packet = left.layer.history.get(source_seq) if left.layer.history else None
                if packet is None:
                    continue
                ts, vp8 = (packet.timestamp + left.ts_offset) & 0xFFFFFFFF, left.vp8
            else:
                continue  # sent for another source before this m-line was reused
            if not budget.allow(stream.packets_sent, now):
                return  # a flood of NACKs: the rest of this one goes unanswered
            self._retransmit(packet, seq, ts, vp8)

    def _retransmit(
        self, packet: IngressPacket, seq: int, ts: int, vp8: Vp8Rewriter | None = None
    ) -> None:
        self.stream.retransmissions += 1
        original = self._rewrite(packet, seq, ts, vp8)
        if self._rtx_payload_type is None:
            self.sink.send_rtp(original)
            return
        stream = self.stream
        stream.rtx_seq = (stream.rtx_seq + 1) & 0xFFFF
        rtx_ssrc = stream.params.local_rtx_ssrc
        self.sink.send_rtp(wrap_rtx(original, self._rtx_payload_type, stream.rtx_seq, rtx_ssrc))

    @property
    def has_rtx(self) -> bool:
        return self._rtx_payload_type is not None

    def padding_packet(self, size: int) -> bytes | None:
        """A padding-only packet of ``size`` octets on this m-line's RTX stream, for probing the
        subscriber's link; None when the m-line has no RTX (padding on the media stream would
        take sequence numbers the munger hands out)."""
        if self._rtx_payload_type is None:
            return None
        stream = self.stream
        stream.rtx_seq = (stream.rtx_seq + 1) & 0xFFFF
        timestamp = stream.munger.last_ts or 0
        return padding_packet(
            self._rtx_payload_type,
            stream.rtx_seq,
            timestamp,
            stream.params.local_rtx_ssrc,
            self._ext_static,
            size,
        )

    def on_keyframe_request(self) -> None:
        """The subscriber's PLI or FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1): passed on to the
        publisher at most every SUBSCRIBER_KEYFRAME_INTERVAL, so that one subscriber cannot
        make the publisher send everyone keyframes as often as the stream's own throttle lets
        all of them together."""
        now = self._clock()
        if now - self._keyframe_asked < SUBSCRIBER_KEYFRAME_INTERVAL:
            return
        layer = self.target or self.layer
        if layer is not None:
            self._keyframe_asked = now
            layer.request_keyframe(now, "subscriber")

    def on_report_block(self, block: ReportBlock, now_wall: float) -> None:
        rtt = rtt_from_report(block.lsr, block.dlsr, now_wall)
        if rtt is not None and rtt >= 0:
            self.rtt = rtt
        self.fraction_lost = block.fraction_lost
        if URI_PLAYOUT_DELAY in self.stream.params.extensions and self.playout_delay.on_report(
            block.fraction_lost, self.rtt, block.jitter / self._clock_rate
        ):
            self._write_extensions()
            _log.debug(
                "playout delay floor",
                ssrc=self._ssrc,
                floor_ms=round(1000 * (self.playout_delay.floor or 0.0)),
                fraction_lost=block.fraction_lost,
            )

    def on_remb(self, bitrate: int) -> None:
        self.remb_bitrate = bitrate

    # --- reports ---

    def sender_report(self, now: float, now_wall: float) -> SenderReport | None:
        """An SR whose NTP<->RTP pair follows the publisher's own SRs (RFC 3550 §6.4.1).

        Both tracks of one publisher are mapped through that publisher's clock, so the
        subscriber can keep its audio and video in sync.
        """
        if self._ts_offset is None or self.layer is None:
            return None
        source_rtp = self.layer.sender_clock.rtp_at(now_wall, self._clock_rate)
        if source_rtp is None:
            return None
        return SenderReport(
            ssrc=self._ssrc,
            ntp_timestamp=ntp_timestamp(now_wall),
            rtp_timestamp=(source_rtp + self._ts_offset) & 0xFFFFFFFF,
            packet_count=self.stream.packets_sent & 0xFFFFFFFF,
            octet_count=self.stream.octets_sent & 0xFFFFFFFF,
            reports=[],
        )

    @property
    def ssrc(self) -> int:
        return self._ssrc

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._left = None
            self.source.remove_down_track(self)


class _ExtensionWriter:
    """Header extensions with the subscriber connection's ids (RFC 8285).

    mid always; the transport-wide sequence number when negotiated (a zero the egress numbers,
    draft-holmer-rmcat-transport-wide-cc-extensions-01); on video, the playout delay when the
    subscriber needs one (``playout``, :mod:`sfu.media.playout_delay`); abs-send-time on video
    (refreshed per packet, for the subscriber's bandwidth estimator); the publisher's audio
    level on audio.
    rid/repaired-rid are never forwarded. Per subscriber this makes two blocks: ``static`` (the
    fixed elements) and ``template`` (those and the variable element, whose value per packet is
    written at ``value_at``).
    """

    def __init__(self, params: MediaParams, playout: bytes | None = None) -> None:
        ids = params.extensions
        fixed = [(ids[URI_MID], params.mid.encode())] if URI_MID in ids else []
        if URI_TRANSPORT_CC in ids:
            fixed.append((ids[URI_TRANSPORT_CC], bytes(2)))
        if playout is not None and params.kind == "video" and URI_PLAYOUT_DELAY in ids:
            fixed.append((ids[URI_PLAYOUT_DELAY], playout))
        abs_send_time_id = ids.get(URI_ABS_SEND_TIME) if params.kind == "video" else None
        audio_level_id = ids.get(URI_AUDIO_LEVEL) if params.kind == "audio" else None
        variable_id = abs_send_time_id or audio_level_id
        #: whether packets carry the value in ``abs_send_time`` (else ``audio_level``)
        self.carries_abs_send_time = abs_send_time_id is not None
        self.static = build_extension_block(fixed)
        self.template = self.static
        self.value_at = -1
        self.value_size = 0
        if variable_id is not None:
            self.value_size = 3 if abs_send_time_id is not None else 1
            self.template = build_extension_block([*fixed, (variable_id, bytes(self.value_size))])
            # the variable element is the last one: its value ends the elements
            one_byte = self.template[:2] == b"\xbe\xde"
            element_header = 1 if one_byte else 2
            elements = sum(element_header + len(v) for _, v in fixed)
            self.value_at = 4 + elements + element_header

    def block(self, packet: IngressPacket) -> bytes:
        """The block for one packet, as the forward path has it written (for retransmissions)."""
        value = packet.abs_send_time if self.carries_abs_send_time else packet.audio_level
        if not value or self.value_at < 0 or len(value) != self.value_size:
            return self.static
        at = self.value_at
        return self.template[:at] + value + self.template[at + self.value_size :]
