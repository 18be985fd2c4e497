"""Ingress of one RTP stream of a published track: parse each packet once, keep upstream state,
fan out.

A track without simulcast is one stream; a simulcast track is one stream per layer (RFC 8853),
each with its own SSRC, sequence numbers, losses, keyframes and sender reports. Per packet this
does the least it can: validate the sequence number (``sfu.media.probation``),
update reception statistics (for receiver reports), note losses (for NACKs), spot keyframes
(video), keep a short history (for retransmissions to subscribers) and hand one
:class:`IngressPacket` to every down-track.

Two numberings: the validator's extended sequence numbers follow the wire (their low 16 bits are
the publisher's, as NACKs and receiver reports need); what down-tracks and the history see is
shifted so that a source that restarts (RFC 3550 §A.1) continues where it was — sequence numbers
by one, timestamps by the time elapsed — as ``RtpMunger.switch_source`` does for one subscriber.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

from sfu.media.keyframe import KeyframeRequester
from sfu.media.latency import FORWARDING, SAMPLE_MASK
from sfu.media.nack import LossTracker, PacketHistory
from sfu.media.params import URI_AUDIO_LEVEL, Codec, MediaParams
from sfu.media.probation import DROP, HOLD, MAX_MISORDER, RESTARTED, SequenceValidator
from sfu.media.reports import PublisherClock, ReceptionStats, SenderClock
from sfu.rtp.codecs import is_keyframe
from sfu.rtp.header import RTP_FIXED, abs_send_time, parse_extensions, payload_bounds, unwrap_rtx
from sfu.rtp.rtcp import ReportBlock
from sfu.rtp.vp8 import Vp8Descriptor, keyframe_size, parse_descriptor

if TYPE_CHECKING:
    from sfu.media.downtrack import DownTrack
    from sfu.media.receiver import TrackReceiver

#: At most this many packets are kept per video track to answer subscribers' NACKs (~2 s at
#: 2.5 Mbit/s); fewer when the track's ``retransmission_window`` holds fewer.
HISTORY_SIZE = 512
#: How far behind the newest packet a missing one is still taken on a track that NACKs
#: (LossTracker's 512); on one that does not, A.1's reordering tolerance (MAX_MISORDER).
NACK_WINDOW = 512


class Upstream(Protocol):
    """What a receiver needs from its publisher's connection."""

    def request_keyframe_now(self, media_ssrc: int) -> None: ...

    def schedule_nack(self, layer: LayerReceiver) -> None: ...

    def call_later(
        self, delay: float, callback: Callable[[], None]
    ) -> asyncio.TimerHandle | None: ...


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
        "vp8",
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
        vp8: Vp8Descriptor | None = None,
    ) -> None:
        self.data = data
        self.ext_seq = ext_seq
        self.timestamp = timestamp
        self.payload_start = payload_start
        self.keyframe = keyframe
        self.arrival = arrival
        self.abs_send_time = abs_send_time
        self.audio_level = audio_level
        #: the VP8 payload descriptor, parsed for simulcast tracks only (their down-tracks
        #: rewrite it); None otherwise
        self.vp8 = vp8
        # payload octets without padding, as a sender report counts them (RFC 3550 §6.4.1)
        self.payload_size = payload_end - payload_start


class LayerReceiver:
    """One publisher stream in (a track, or one simulcast layer of it), down-tracks out.

    ``down_tracks`` forward this stream; ``waiting`` are down-tracks that will, from the next
    packet that can start them (a keyframe on video, any packet on audio). A down-track is in
    at most one of those lists of one layer of its track at a time, so a packet costs nothing
    for the subscribers of the other layers. ``leaving``: down-tracks that forward this layer
    while they wait for another one (see :meth:`DownTrack.on_leaving_packet`).
    """

    def __init__(
        self,
        track: TrackReceiver,
        params: MediaParams,
        upstream: Upstream,
        keyframe_min_interval: float,
        publisher_clock: PublisherClock,
        retransmission_window: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        rid: str | None = None,
        ssrc: int | None = None,
    ) -> None:
        codec = params.primary
        if codec is None:
            raise ValueError(f"m-line {params.mid} negotiated no codec")
        self.track = track
        self.rid = rid
        self.codec: Codec = codec
        self.is_video = params.kind == "video"
        self.ssrc: int | None = ssrc
        #: the RTX SSRC repairing ``ssrc`` (RFC 4588), declared (a=ssrc-group:FID) or latched
        self.rtx_ssrc: int | None = next(
            (rtx for rtx, media in params.remote_rtx.items() if media == ssrc), None
        )
        self.down_tracks: list[DownTrack] = []
        self.waiting: list[DownTrack] = []
        self.leaving: list[DownTrack] = []
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
        self.keyframes = KeyframeRequests(self, upstream, keyframe_min_interval, clock)
        self._codec_name = codec.name.upper()
        #: parse VP8 payload descriptors: the down-tracks of a simulcast track rewrite them
        self._vp8 = self._codec_name == "VP8" and track.simulcast
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
        self.codec = codec
        self._payload_types = {codec.payload_type}
        self._audio_level_id = params.extensions.get(URI_AUDIO_LEVEL)

    # --- packets in ---

    def on_rtp(self, data: bytes, now: float, resent: bool = False) -> None:
        """A decrypted packet of this stream's SSRC (``resent``: unwrapped from RTX)."""
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
        vp8 = None
        if self.is_video:
            if self._vp8:
                vp8 = parse_descriptor(data, start, end)
                keyframe = vp8 is not None and vp8.keyframe
            elif start < end:
                keyframe = is_keyframe(self._codec_name, memoryview(data)[start:end])
            if keyframe:
                self.keyframes.on_keyframe()
                if self._vp8:
                    keyframes = self.keyframes
                    keyframes.frame_size = keyframe_size(data, start, end) or keyframes.frame_size
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
            vp8,
        )
        if self.history is not None:
            self.history.put(ext_seq, packet, now)
        self._newest = packet
        if self.waiting and (keyframe or not self.is_video):
            self._start_waiting(packet)
        if self.leaving:
            for down_track in self.leaving:
                down_track.on_leaving_packet(self, packet)
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

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(width, height) of the latest keyframe, where the codec says (VP8)."""
        return self.keyframes.frame_size

    @frame_size.setter
    def frame_size(self, size: tuple[int, int] | None) -> None:
        self.keyframes.frame_size = size

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle | None:
        return self._upstream.call_later(delay, callback)

    def _start_waiting(self, packet: IngressPacket) -> None:
        """Down-tracks waiting for this stream start with ``packet`` (they forward it next)."""
        waiting = self.waiting
        for down_track in list(waiting):
            if down_track.begin(self, packet):
                waiting.remove(down_track)

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
            elapsed = max(1, int((arrival - newest.arrival) * self.codec.clock_rate))
            first_ts = RTP_FIXED.unpack_from(first)[3]
            self._shift = (
                forwarded_highest - validator.highest,  # the first: forwarded_highest + 1
                (newest.timestamp + elapsed - first_ts) & 0xFFFFFFFF,
            )
        # RFC 3550 §A.1 init_seq: statistics and losses start over with the new numbers
        self._stats = ReceptionStats(self.codec.clock_rate)
        if self.loss is not None:
            self.loss = LossTracker()

    def on_rtx(self, data: bytes, now: float) -> None:
        """A retransmission (RFC 4588) of this track, answering one of our NACKs.

        Taken only if its original sequence number names a packet still missing: garbage, or a
        padding probe repeating what arrived, is dropped.
        """
        if self.ssrc is None or len(data) < 14 or data[1] & 0x7F != self.codec.rtx_payload_type:
            return  # (a packet of another payload type on the RTX SSRC carries no OSN)
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

    def request_keyframe(self, now: float, reason: KeyframeReason = "subscriber") -> None:
        """A subscriber needs a keyframe: coalesced and throttled across all of them."""
        self.keyframes.request(now, reason)

    # --- subscribers ---

    def wait(self, down_track: DownTrack, now: float) -> None:
        """``down_track`` forwards this stream from its next keyframe (asked for)."""
        if down_track not in self.waiting:
            self.waiting.append(down_track)
        if self.is_video and down_track.sink.connected:
            self.keyframes.request(now, "start")

    def unwait(self, down_track: DownTrack) -> None:
        if down_track in self.waiting:
            self.waiting.remove(down_track)

    def detach(self, down_track: DownTrack) -> None:
        """``down_track`` no longer forwards nor waits for this stream."""
        if down_track in self.down_tracks:
            self.down_tracks.remove(down_track)
        if down_track in self.leaving:
            self.leaving.remove(down_track)
        self.unwait(down_track)

    def close(self) -> None:
        self.closed = True
        self.down_tracks.clear()
        self.waiting.clear()
        self.leaving.clear()
        self.keyframes.close()


#: How often a layer with down-tracks waiting for its keyframe asks again (seconds). A publisher
#: may ignore a request: libwebrtc does within 300 ms of its last keyframe, so a subscriber that
#: joins just after the first keyframe and asks at once would otherwise wait for ever.
KEYFRAME_RETRY = 1.0

#: Why a keyframe was asked of a publisher: a subscriber's PLI/FIR; a down-track starting or
#: switching to a layer; the repeat while down-tracks still wait (``sfu_keyframe_requests_total``)
KeyframeReason = Literal["subscriber", "start", "retry"]
KEYFRAME_REASONS: tuple[KeyframeReason, ...] = ("subscriber", "start", "retry")


class KeyframeRequests:
    """Keyframe requests for one stream: throttled (:class:`KeyframeRequester`), sent late when
    throttled, and repeated while down-tracks wait for a keyframe and nothing came.

    ``sent`` counts the requests sent, by the reason of the first request each one answers.
    """

    __slots__ = (
        "_armed",
        "_clock",
        "_layer",
        "_pending_reason",
        "_requester",
        "_timer",
        "_upstream",
        "frame_size",
        "sent",
    )

    def __init__(
        self,
        layer: LayerReceiver,
        upstream: Upstream,
        min_interval: float,
        clock: Callable[[], float],
    ) -> None:
        self._layer = layer
        self._upstream = upstream
        self._requester = KeyframeRequester(min_interval)
        self._clock = clock
        self._armed = False
        self._timer: asyncio.TimerHandle | None = None
        self._pending_reason: KeyframeReason = "subscriber"
        self.sent: dict[KeyframeReason, int] = dict.fromkeys(KEYFRAME_REASONS, 0)
        #: the layer's (width, height) as its latest keyframe said (kept here, with what is
        #: known of its keyframes, rather than as a 31st attribute of the layer)
        self.frame_size: tuple[int, int] | None = None

    def request(self, now: float, reason: KeyframeReason) -> None:
        layer = self._layer
        if not layer.is_video or layer.ssrc is None or layer.closed:
            return
        requester = self._requester
        idle = requester.next_due is None
        if requester.request(now):
            self._send(layer.ssrc, reason)
        elif idle:  # held back: the late request answers this one (later ones join it)
            self._pending_reason = reason
        self._arm(now)

    def _send(self, ssrc: int, reason: KeyframeReason) -> None:
        self.sent[reason] += 1
        self._upstream.request_keyframe_now(ssrc)

    def on_keyframe(self) -> None:
        self._requester.on_keyframe(0.0)

    def _arm(self, now: float) -> None:
        if self._armed or self._layer.closed:
            return
        due = self._requester.next_due
        if due is None:
            if not self._layer.waiting:
                return
            due = now + KEYFRAME_RETRY
        self._armed = True
        # the loop's timer clock is coarser than time.monotonic(): it may fire a little early
        self._timer = self._upstream.call_later(max(0.001, due - now), self._fire)

    def close(self) -> None:
        """The stream ended: the pending timer goes, or it would keep the publisher's
        connection (and participant) alive until it fires, up to KEYFRAME_RETRY after leaving."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._armed = False
        self._timer = None
        layer = self._layer
        if layer.closed or layer.ssrc is None:
            return
        now = self._clock()
        requester = self._requester
        if requester.due(now):
            self._send(layer.ssrc, self._pending_reason)
        elif (
            requester.next_due is None
            and any(d.sink.connected for d in layer.waiting)
            and requester.request(now)
        ):
            self._send(layer.ssrc, "retry")
        self._arm(now)
