"""One simulcast layer on the wire: its RTP stream and RTX stream (RFC 3550, RFC 4588).

:class:`OutboundLayer` numbers the packets of one layer (sequence numbers, timestamps, VP8
picture ids), keeps them for NACKs and counts them for sender reports; :class:`PacketWriter`
writes the headers the m-line negotiated (payload types, RFC 8285 extension ids: mid, rid or
repaired rid until the SSRC is acknowledged, abs-send-time). No I/O.
"""

from __future__ import annotations

import random
import time

from sfu.media.params import URI_ABS_SEND_TIME, URI_MID, URI_REPAIRED_RID, URI_RID
from sfu.rtp import rtcp
from sfu.rtp.header import RTP_FIXED, abs_send_time, build_extension_block
from sfu_client.simulcast_media import is_keyframe, keyframe_size, vp8_payloads
from sfu_client.simulcast_sdp import Negotiated, header_extension_ids

HISTORY_SIZE = 1024  # packets per layer kept for NACKs (~1 s of a 1 Mbit/s layer)
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)


def ntp_time(now: float) -> int:
    """64-bit NTP timestamp of a Unix time (RFC 3550 §4)."""
    return round((now + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


class OutboundLayer:
    """One layer's RTP stream and its RTX stream: numbering, history, counters."""

    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.ssrc = random.getrandbits(32)
        self.rtx_ssrc = random.getrandbits(32)
        #: wanted (by the application or the server); a layer sends when also negotiated
        self.active = True
        self.negotiated = False
        self.keyframe_wanted = True
        #: the answerer's receiver reports acknowledged the SSRC (then mid/rid are left out)
        self.acked = False
        self.rtx_acked = False
        self.size: tuple[int, int] | None = None  # from the last keyframe sent
        self.frames_sent = 0
        self.keyframes_sent = 0
        self.keyframe_requests = 0  # PLIs and new FIRs for this layer
        self.packets_sent = 0
        self.bytes_sent = 0  # payload octets, as sender reports count them
        self.nacked = 0  # sequence numbers asked for again
        self.retransmitted = 0
        # lower half of the range, as aiortc: no SRTP rollover in the first packets
        self._seq = random.getrandbits(15)
        self._rtx_seq = random.getrandbits(15)
        self._timestamp_offset = random.getrandbits(32)
        self._picture_id = random.getrandbits(15)
        self._history: list[tuple[int, int, int, bytes] | None] = [None] * HISTORY_SIZE
        self._last_frame: tuple[float, int] | None = None  # (Unix time, RTP timestamp)
        self._fir_seq: int | None = None

    @property
    def sending(self) -> bool:
        return self.active and self.negotiated

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self.keyframe_wanted = True

    def on_fir(self, seq: int) -> None:
        """RFC 5104 §4.3.1.2: a FIR repeating the last command sequence number is a
        retransmission of the same request, not a new one."""
        if seq != self._fir_seq:
            self._fir_seq = seq
            self.request_keyframe()

    def packetize(self, frame: bytes, ticks: int, writer: PacketWriter) -> list[bytes]:
        """The RTP packets of one encoded frame; ``ticks`` is its 90 kHz time."""
        payloads = vp8_payloads(frame, self._picture_id)
        if not payloads:
            return []
        self._picture_id = (self._picture_id + 1) & 0x7FFF
        if is_keyframe(frame):
            self.keyframe_wanted = False
            self.keyframes_sent += 1
            self.size = keyframe_size(frame) or self.size
        timestamp = (self._timestamp_offset + ticks) & 0xFFFFFFFF
        now = time.time()
        self._last_frame = (now, timestamp)
        extensions = writer.extensions(now, self.rid, repaired=False, acked=self.acked)
        packets = []
        last = len(payloads) - 1
        for index, payload in enumerate(payloads):
            seq = self._seq
            self._seq = (seq + 1) & 0xFFFF
            marker = 1 if index == last else 0
            self._history[seq % HISTORY_SIZE] = (seq, timestamp, marker, payload)
            packets.append(writer.packet(marker, seq, timestamp, self.ssrc, extensions, payload))
            self.bytes_sent += len(payload)
        self.packets_sent += len(packets)
        self.frames_sent += 1
        return packets

    def retransmission(self, seq: int, writer: PacketWriter) -> bytes | None:
        """The packet ``seq`` again: in an RTX packet (RFC 4588 §4) if RTX was negotiated."""
        self.nacked += 1
        kept = self._history[seq % HISTORY_SIZE]
        if kept is None or kept[0] != seq:
            return None
        _, timestamp, marker, payload = kept
        self.retransmitted += 1
        if writer.rtx_payload_type is None:
            extensions = writer.extensions(time.time(), self.rid, repaired=False, acked=self.acked)
            return writer.packet(marker, seq, timestamp, self.ssrc, extensions, payload)
        rtx_seq = self._rtx_seq
        self._rtx_seq = (rtx_seq + 1) & 0xFFFF
        extensions = writer.extensions(time.time(), self.rid, repaired=True, acked=self.rtx_acked)
        payload = seq.to_bytes(2, "big") + payload
        return writer.packet(marker, rtx_seq, timestamp, self.rtx_ssrc, extensions, payload, True)

    def sender_report(self, now: float) -> rtcp.SenderReport | None:
        """RFC 3550 §6.4.1: the RTP time of ``now`` extrapolated from the last frame sent."""
        if self._last_frame is None:
            return None
        sent_at, timestamp = self._last_frame
        rtp_now = (timestamp + round((now - sent_at) * 90_000)) & 0xFFFFFFFF
        return rtcp.SenderReport(
            self.ssrc,
            ntp_time(now),
            rtp_now,
            self.packets_sent & 0xFFFFFFFF,
            self.bytes_sent & 0xFFFFFFFF,
            [],
        )


class PacketWriter:
    """RTP headers for one negotiated m-line: payload types and extension ids (RFC 8285)."""

    def __init__(self, mid: str, negotiated: Negotiated, with_rid: bool) -> None:
        payload_type = negotiated.payload_types.get("vp8")
        if payload_type is None:
            raise ValueError(f"the answer for m-line {mid} has no VP8 to send simulcast with")
        self.payload_type = payload_type
        self.rtx_payload_type = negotiated.rtx_payload_types.get(payload_type)
        ids = header_extension_ids(negotiated)
        self._mid = (ids[URI_MID], mid.encode()) if URI_MID in ids else None
        self._rid = ids.get(URI_RID) if with_rid else None
        self._repaired = ids.get(URI_REPAIRED_RID) if with_rid else None
        self._abs_send_time = ids.get(URI_ABS_SEND_TIME)

    def extensions(self, now: float, rid: str, *, repaired: bool, acked: bool) -> bytes:
        elements: list[tuple[int, bytes]] = []
        if not acked:
            if self._mid is not None:
                elements.append(self._mid)
            rid_id = self._repaired if repaired else self._rid
            if rid_id is not None:
                elements.append((rid_id, rid.encode()))
        if self._abs_send_time is not None:
            elements.append((self._abs_send_time, abs_send_time(now)))
        return build_extension_block(elements)

    def packet(
        self,
        marker: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        extensions: bytes,
        payload: bytes,
        rtx: bool = False,
    ) -> bytes:
        payload_type = self.rtx_payload_type if rtx and self.rtx_payload_type else self.payload_type
        first = 0x90 if extensions else 0x80
        header = RTP_FIXED.pack(first, marker << 7 | payload_type, seq, timestamp, ssrc)
        return header + extensions + payload
