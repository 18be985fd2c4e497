"""A down-track of a VP8 simulcast track: the layer switches are invisible to the decoder.

On top of :class:`~sfu.media.downtrack.DownTrack`'s sequence numbers and timestamps, the payload
descriptor's picture id, TL0PICIDX and KEYIDX continue across layers, and temporal layers above
the subscriber's choice are dropped (:class:`~sfu.media.vp8_rewriter.Vp8Rewriter`, RFC 7741).
Still one C call per copy: ``send_vp8`` writes the descriptor fields as it copies the payload.
A track without simulcast keeps the plain down-track: nothing of this runs for it.
"""

from __future__ import annotations

from sfu.media.downtrack import DownTrack
from sfu.media.layer import IngressPacket, LayerReceiver
from sfu.media.vp8_rewriter import MAX_TEMPORAL_LAYER, Vp8Rewriter
from sfu.rtp.vp8 import patch_descriptor


class Vp8DownTrack(DownTrack):
    def _rewriter(self) -> Vp8Rewriter:
        stream = self.stream
        if stream.vp8 is None:
            stream.vp8 = Vp8Rewriter()
        return stream.vp8

    def set_temporal_layer(self, layer: int | None) -> None:
        """Forward temporal layers up to ``layer`` (None: all); up at a layer-sync point."""
        self._rewriter().max_temporal_layer = MAX_TEMPORAL_LAYER if layer is None else layer

    def begin(self, layer: LayerReceiver, packet: IngressPacket) -> bool:
        if not super().begin(layer, packet):
            return False
        self._rewriter().switch_source()
        return True

    def forward(self, packet: IngressPacket) -> None:
        descriptor = packet.vp8
        stream = self.stream
        vp8 = stream.vp8
        if descriptor is None or vp8 is None:
            super().forward(packet)
            return
        fields = vp8.forward(descriptor)
        if fields is None:  # a temporal layer not forwarded: it leaves no gap
            stream.munger.drop(packet.ext_seq)
            return
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
        picture_id, tl0picidx, keyidx = fields
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

    def _rewrite(self, packet: IngressPacket, seq: int, ts: int) -> bytes:
        data = super()._rewrite(packet, seq, ts)
        vp8 = self.stream.vp8
        if packet.vp8 is None or vp8 is None:
            return data
        fields = vp8.resend(packet.vp8)  # the values it was sent with
        if fields is None:
            return data
        # the rewritten packet's payload starts where its new header ends
        start = len(data) - (len(packet.data) - packet.payload_start)
        return patch_descriptor(data, start, *fields)
