"""Ingress of one published track: parse each packet once, keep upstream state, fan out.

Per packet this does the least it can: unwrap the sequence number, update reception statistics
(for receiver reports), note losses (for NACKs), spot keyframes (video), keep a short history (for
retransmissions to subscribers) and hand one :class:`IngressPacket` to every down-track.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from sfu.api import TrackInfo
from sfu.media.keyframe import KeyframeRequester
from sfu.media.latency import FORWARDING, SAMPLE_MASK
from sfu.media.nack import LossTracker, PacketHistory
from sfu.media.params import URI_AUDIO_LEVEL, Codec, MediaParams
from sfu.media.reports import PublisherClock, ReceptionStats, SenderClock
from sfu.media.seq import SequenceUnwrapper
from sfu.rtp.codecs import is_keyframe
from sfu.rtp.header import RTP_FIXED, abs_send_time, parse_extensions, payload_bounds, unwrap_rtx
from sfu.rtp.rtcp import ReportBlock

if TYPE_CHECKING:
    from sfu.media.downtrack import DownTrack

#: At most this many packets are kept per video track to answer subscribers' NACKs (~2 s at
#: 2.5 Mbit/s); fewer when the track's ``retransmission_window`` holds fewer.
HISTORY_SIZE = 512


class Upstream(Protocol):
    """What a receiver needs from its publisher's connection."""

    def request_keyframe_now(self, media_ssrc: int) -> None: ...

    def schedule_nack(self, receiver: TrackReceiver) -> None: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> None: ...


class IngressPacket:
    """One received packet, parsed once and shared by every down-track (read-only)."""

    __slots__ = (
        "abs_send_time",
        "arrival",
        "audio_level",
        "data",
        "ext_seq",
        "keyframe",
        "payload_size",
        "payload_start",
        "timestamp",
    )

    def __init__(
        self,
        data: bytes,
        ext_seq: int,
        timestamp: int,
        payload_start: int,
        payload_end: int,
        keyframe: bool,
        arrival: float,
        abs_send_time: bytes,
        audio_level: bytes | None,
    ) -> None:
        self.data = data
        self.ext_seq = ext_seq
        self.timestamp = timestamp
        self.payload_start = payload_start
        self.keyframe = keyframe
        self.arrival = arrival
        self.abs_send_time = abs_send_time
        self.audio_level = audio_level
        # payload octets without padding, as a sender report counts them (RFC 3550 §6.4.1)
        self.payload_size = payload_end - payload_start


class TrackReceiver:
    """A published track: one publisher stream in, any number of down-tracks out."""

    def __init__(
        self,
        info: TrackInfo,
        params: MediaParams,
        upstream: Upstream,
        keyframe_min_interval: float,
        publisher_clock: PublisherClock,
        retransmission_window: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        codec = params.primary
        if codec is None:
            raise ValueError(f"m-line {params.mid} negotiated no codec")
        self.info = info
        self.params = params
        self.codec: Codec = codec
        self.clock_rate = codec.clock_rate
        self.is_video = info.kind == "video"
        self.ssrc: int | None = params.remote_ssrcs[0] if params.remote_ssrcs else None
        self.down_tracks: list[DownTrack] = []
        self.sender_clock = SenderClock(publisher_clock)
        self.packets_received = 0
        self.bytes_received = 0
        self._upstream = upstream
        self._wall_clock = wall_clock
        self._clock = clock
        self._payload_types = {codec.payload_type}
        self._unwrapper = SequenceUnwrapper()
        self._stats = ReceptionStats(codec.clock_rate)
        self._keyframes = KeyframeRequester(keyframe_min_interval)
        self._keyframe_timer_armed = False
        self._codec_name = codec.name.upper()
        self._audio_level_id = params.extensions.get(URI_AUDIO_LEVEL)
        can_nack = any(f == "nack" for f in codec.feedback)
        self.loss: LossTracker | None = LossTracker() if self.is_video and can_nack else None
        self.history: PacketHistory[IngressPacket] | None = (
            PacketHistory(HISTORY_SIZE, retransmission_window) if self.is_video else None
        )
        self.closed = False

    def update(self, params: MediaParams) -> None:
        """Take what the latest negotiation settled (a peer may renumber payload types)."""
        codec = params.primary
        if codec is None or not codec.same_format(self.codec):
            return  # a codec change on a published m-line: keep forwarding what we know
        self.params = params
        self.codec = codec
        self._payload_types = {codec.payload_type}
        self._audio_level_id = params.extensions.get(URI_AUDIO_LEVEL)

    # --- packets in ---

    def on_rtp(self, data: bytes, now: float) -> None:
        """A decrypted packet of this track's media SSRC."""
        if len(data) < 12 or self.closed:
            return
        b0, b1, seq, timestamp, ssrc = RTP_FIXED.unpack_from(data)
        if (b1 & 0x7F) not in self._payload_types:
            return  # another codec than the one negotiated first: not forwardable
        try:
            start, end = payload_bounds(data)
        except ValueError:
            return
        if self.ssrc is None:
            self.ssrc = ssrc
        ext_seq = self._unwrapper.unwrap(seq)
        self.packets_received += 1
        self.bytes_received += len(data)
        self._stats.on_packet(ext_seq, timestamp, now)
        keyframe = False
        audio_level = None
        if self.is_video:
            if start < end:
                keyframe = is_keyframe(self._codec_name, memoryview(data)[start:end])
            if keyframe:
                self._keyframes.on_keyframe(now)
            if self.loss is not None:
                self.loss.on_packet(ext_seq, now)
                if self.loss.missing:
                    self._upstream.schedule_nack(self)
        elif self._audio_level_id is not None and b0 & 0x10:
            try:
                audio_level = parse_extensions(data).get(self._audio_level_id)
            except ValueError:
                audio_level = None
            if audio_level is not None and len(audio_level) != 1:
                audio_level = None  # RFC 6464 §3: one byte; anything else is not forwarded
        packet = IngressPacket(
            data,
            ext_seq,
            timestamp,
            start,
            end,
            keyframe,
            now,
            abs_send_time(self._wall_clock()) if self.is_video else b"",
            audio_level,
        )
        if self.history is not None:
            self.history.put(ext_seq, packet, now)
        if self.packets_received & SAMPLE_MASK:
            for down_track in self.down_tracks:
                down_track.forward(packet)
        else:
            self._forward_timed(packet)

    def _forward_timed(self, packet: IngressPacket) -> None:
        """Forward one sampled packet, recording each copy's time since the packet arrived.

        The k-th subscriber's copy waits for the k-1 before it: that is part of its latency.
        """
        clock = self._clock
        arrival = packet.arrival
        observe = FORWARDING.observe
        for down_track in self.down_tracks:
            down_track.forward(packet)
            observe(clock() - arrival)

    def on_rtx(self, data: bytes, now: float) -> None:
        """A retransmission (RFC 4588) of this track, answering one of our NACKs."""
        if self.ssrc is None or len(data) < 14:
            return
        try:
            original = unwrap_rtx(data, self.codec.payload_type, self.ssrc)
        except ValueError:
            return
        self.on_rtp(original, now)

    # --- RTCP ---

    def on_sender_report(
        self, ntp_timestamp: int, rtp_timestamp: int, now: float, now_wall: float
    ) -> None:
        self.sender_clock.on_sender_report(ntp_timestamp, rtp_timestamp, now_wall)
        self._stats.on_sender_report(ntp_timestamp, now)

    def report_block(self, now: float) -> ReportBlock | None:
        if self.ssrc is None or not self.packets_received:
            return None
        return self._stats.report_block(self.ssrc, now)

    def request_keyframe(self, now: float) -> None:
        """A subscriber needs a keyframe: coalesced and throttled across all of them."""
        if not self.is_video or self.ssrc is None:
            return
        if self._keyframes.request(now):
            self._upstream.request_keyframe_now(self.ssrc)
        elif not self._keyframe_timer_armed and self._keyframes.next_due is not None:
            self._keyframe_timer_armed = True
            self._upstream.call_later(
                max(0.0, self._keyframes.next_due - now), self._send_pending_keyframe_request
            )

    def _send_pending_keyframe_request(self) -> None:
        self._keyframe_timer_armed = False
        if self.closed or self.ssrc is None:
            return
        now = self._clock()
        if self._keyframes.due(now):
            self._upstream.request_keyframe_now(self.ssrc)
        elif self._keyframes.next_due is not None:
            # the loop's timer clock is coarser than time.monotonic(): it may fire a little early
            self._keyframe_timer_armed = True
            delay = max(0.001, self._keyframes.next_due - now)
            self._upstream.call_later(delay, self._send_pending_keyframe_request)

    # --- subscribers ---

    def add_down_track(self, down_track: DownTrack) -> None:
        self.down_tracks.append(down_track)

    def remove_down_track(self, down_track: DownTrack) -> None:
        if down_track in self.down_tracks:
            self.down_tracks.remove(down_track)

    def close(self) -> None:
        self.closed = True
        for down_track in list(self.down_tracks):
            down_track.close()
        self.down_tracks.clear()
