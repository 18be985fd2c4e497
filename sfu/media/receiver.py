"""Ingress of one published track: parse each packet once, keep upstream state, fan out.

Per packet this does the least it can: validate the sequence number (``sfu.media.probation``),
update reception statistics (for receiver reports), note losses (for NACKs), spot keyframes
(video), keep a short history (for retransmissions to subscribers) and hand one
:class:`IngressPacket` to every down-track.

Two numberings: the validator's extended sequence numbers follow the wire (their low 16 bits are
the publisher's, as NACKs and receiver reports need); what down-tracks and the history see is
shifted so that a source that restarts (RFC 3550 §A.1) continues where it was — sequence numbers
by one, timestamps by the time elapsed — as ``RtpMunger.switch_source`` does for one subscriber.
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
from sfu.media.probation import DROP, HOLD, MAX_MISORDER, RESTARTED, SequenceValidator
from sfu.media.reports import PublisherClock, ReceptionStats, SenderClock
from sfu.rtp.codecs import is_keyframe
from sfu.rtp.header import RTP_FIXED, abs_send_time, parse_extensions, payload_bounds, unwrap_rtx
from sfu.rtp.rtcp import ReportBlock

if TYPE_CHECKING:
    from sfu.media.downtrack import DownTrack

#: At most this many packets are kept per video track to answer subscribers' NACKs (~2 s at
#: 2.5 Mbit/s); fewer when the track's ``retransmission_window`` holds fewer.
HISTORY_SIZE = 512
#: How far behind the newest packet a missing one is still taken on a track that NACKs
#: (LossTracker's 512); on one that does not, A.1's reordering tolerance (MAX_MISORDER).
NACK_WINDOW = 512


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
        #: the RTX SSRC repairing ``ssrc`` (RFC 4588), declared (a=ssrc-group:FID) or latched
        self.rtx_ssrc: int | None = next(
            (rtx for rtx, media in params.remote_rtx.items() if media == self.ssrc), None
        )
        self.down_tracks: list[DownTrack] = []
        self.sender_clock = SenderClock(publisher_clock)
        self.packets_received = 0
        self.bytes_received = 0
        #: packets refused by the sequence check (never forwarded, kept or NACKed): duplicates and
        #: jumps never confirmed; and RTX of nothing missing (Chrome probes bandwidth with those)
        self.packets_dropped = 0
        self.retransmissions_dropped = 0
        self._upstream = upstream
        self._wall_clock = wall_clock
        self._clock = clock
        self._payload_types = {codec.payload_type}
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
        # (CPython keeps an instance's attributes in a shared-key table up to 30 of them, and
        # reads them fastest there: mind the count before adding one)
        self._validator = SequenceValidator(NACK_WINDOW if self.loss else MAX_MISORDER)
        self._held: tuple[bytes, float] | None = None  # the packet in probation, its arrival
        self._newest: IngressPacket | None = None  # the last packet taken
        # after a restart of the source: (extended seq, timestamp) on the wire -> as forwarded
        self._shift: tuple[int, int] | None = None
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

    def on_rtp(self, data: bytes, now: float, resent: bool = False) -> None:
        """A decrypted packet of this track's media SSRC (``resent``: unwrapped from RTX)."""
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
        validator = self._validator
        wire_seq = validator.check_retransmission(seq) if resent else validator.check(seq)
        if wire_seq < 0:
            self._not_in_sequence(wire_seq, data, now, resent)
            return
        self.packets_received += 1
        self.bytes_received += len(data)
        self._stats.on_packet(wire_seq, timestamp, now)
        ext_seq = wire_seq
        if self._shift is not None:
            ext_seq += self._shift[0]
            timestamp = (timestamp + self._shift[1]) & 0xFFFFFFFF
        keyframe = False
        audio_level = None
        if self.is_video:
            if start < end:
                keyframe = is_keyframe(self._codec_name, memoryview(data)[start:end])
            if keyframe:
                self._keyframes.on_keyframe(now)
            if self.loss is not None:
                self.loss.on_packet(wire_seq, now)
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
        self._newest = packet
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

    def _not_in_sequence(self, verdict: int, data: bytes, now: float, resent: bool) -> None:
        """A packet the validator did not take at once (RFC 3550 §A.1 probation)."""
        if verdict == DROP:
            if resent:
                self.retransmissions_dropped += 1
            else:
                self.packets_dropped += 1
            return
        held = self._held
        if verdict == HOLD:
            if held is not None:
                self.packets_dropped += 1  # a jump nothing followed
            self._held = (data, now)
            return
        # the held packet and this one are in sequence: feed both (the validator expects them)
        self._held = None
        if held is None:  # never: the validator syncs only on the successor of a held packet
            return
        if verdict == RESTARTED:
            self._restart(*held)
        self.on_rtp(*held)
        self.on_rtp(data, now)

    def _restart(self, first: bytes, arrival: float) -> None:
        """The source starts over from ``first``: forward it as if it had never stopped."""
        newest = self._newest
        if newest is not None:
            # sequence numbers on by one; the timestamp on by the time elapsed, as a new source
            # on a reused m-line gets (RtpMunger.switch_source)
            validator = self._validator
            seq_shift = 0 if self._shift is None else self._shift[0]
            forwarded_highest = validator.previous_highest + seq_shift
            elapsed = max(1, int((arrival - newest.arrival) * self.clock_rate))
            first_ts = RTP_FIXED.unpack_from(first)[3]
            self._shift = (
                forwarded_highest - validator.highest,  # the first: forwarded_highest + 1
                (newest.timestamp + elapsed - first_ts) & 0xFFFFFFFF,
            )
        # RFC 3550 §A.1 init_seq: statistics and losses start over with the new numbers
        self._stats = ReceptionStats(self.clock_rate)
        if self.loss is not None:
            self.loss = LossTracker()

    def on_rtx(self, data: bytes, now: float) -> None:
        """A retransmission (RFC 4588) of this track, answering one of our NACKs.

        Taken only if its original sequence number names a packet still missing: garbage, or a
        padding probe repeating what arrived, is dropped.
        """
        if self.ssrc is None or len(data) < 14:
            return
        try:
            original = unwrap_rtx(data, self.codec.payload_type, self.ssrc)
        except ValueError:
            return  # no original sequence number: a padding-only probe
        self.on_rtp(original, now, True)

    # --- RTCP ---

    def on_sender_report(
        self, ntp_timestamp: int, rtp_timestamp: int, now: float, now_wall: float
    ) -> None:
        if self._shift is not None:  # in the forwarded timeline, which a restart shifted
            rtp_timestamp = (rtp_timestamp + self._shift[1]) & 0xFFFFFFFF
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
