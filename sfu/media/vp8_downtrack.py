"""A down-track of a VP8 simulcast track: the layer switches are invisible to the decoder.

On top of :class:`~sfu.media.downtrack.DownTrack`'s sequence numbers and timestamps, the payload
descriptor's picture id, TL0PICIDX and KEYIDX continue across layers, and temporal layers above
the subscriber's choice are dropped (:class:`~sfu.media.vp8_rewriter.Vp8Rewriter`, RFC 7741).
Still one C call per copy: ``DownTrack.forward`` calls ``send_vp8``, which writes the descriptor
fields as it copies the payload, with what :meth:`Vp8DownTrack._descriptor_fields` decides.
A track without simulcast keeps the plain down-track: nothing of this runs for it.
"""

from __future__ import annotations

from sfu.media.downtrack import DownTrack
from sfu.media.layer import IngressPacket, LayerReceiver
from sfu.media.vp8_rewriter import MAX_TEMPORAL_LAYER, Vp8Rewriter
from sfu.rtp.vp8 import Vp8Descriptor, patch_descriptor


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

    def _descriptor_fields(self, descriptor: Vp8Descriptor) -> tuple[int, int, int] | None:
        return self._rewriter().forward(descriptor)

    def _resend_state(self) -> Vp8Rewriter | None:
        vp8 = self.stream.vp8
        return None if vp8 is None else vp8.snapshot()

    def _rewrite(
        self, packet: IngressPacket, seq: int, ts: int, vp8: Vp8Rewriter | None = None
    ) -> bytes:
        data = super()._rewrite(packet, seq, ts)
        vp8 = vp8 if vp8 is not None else self.stream.vp8
        if packet.vp8 is None or vp8 is None:
            return data
        fields = vp8.resend(packet.vp8)  # the values it was sent with
        if fields is None:
            return data
        # the rewritten packet's payload starts where its new header ends
        start = len(data) - (len(packet.data) - packet.payload_start)
        return patch_descriptor(data, start, *fields)
