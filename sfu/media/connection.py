"""One participant's peer connection, as the media plane sees it.

Ingress: decrypted RTP is routed by SSRC to the stream it belongs to (a track's
:class:`LayerReceiver`): declared in the SDP, else latched once per stream from the mid and rid
header extensions (RFC 8843 §15, RFC 8852) or the payload type; packets on any other SSRC are
dropped and counted. RTCP is routed to the receivers
(sender reports from the publisher) and down-tracks (feedback from the subscriber).
Egress: forwarded RTP, and the RTCP the server owes each side — receiver reports, REMB, NACK and
PLI to publishers; sender reports to subscribers.
Bandwidth: a subscriber's transport-wide feedback (or REMB) and RTT feed its estimate
(:mod:`sfu.media.bandwidth`); each tick the estimate, less the audio, is the budget its video
layers are chosen in, and the probe clusters the estimator asks for are sent
(:mod:`sfu.media.prober`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from sfu.api import ConnectionQualityReport, LayerActivity, TrackSettings
from sfu.bwe.feedback import EgressFeedback, FeedbackSummary
from sfu.config import MediaConfig
from sfu.media.aiortc_bridge import MediaTransport, ServerPeerConnection
from sfu.media.allocation import PublisherSide, SubscriberAllocation
from sfu.media.bandwidth import SubscriberBandwidth
from sfu.media.downtrack import DownTrack
from sfu.media.layer import LayerReceiver
from sfu.media.params import TRANSPORT_CC, URI_MID, URI_REPAIRED_RID, URI_RID, URI_TRANSPORT_CC
from sfu.media.prober import Prober
from sfu.media.publisher_feedback import PublisherFeedback
from sfu.media.receiver import TrackReceiver
from sfu.media.reports import PublisherClock
from sfu.rtp import rtcp
from sfu.rtp.header import RTP_FIXED, parse_extensions
from sfu.rtp.twcc import TransportFeedback

RtpRoute = Callable[[bytes, float], None]

#: Report blocks per RR/SR packet (RFC 3550 §6.4: a 5-bit count).
_MAX_BLOCKS = 31
#: Sender reports per compound packet, to stay well under the path MTU.
_MAX_SR_PER_COMPOUND = 20
_NACK_INTERVAL = 0.02
#: How often liveness is checked and reports come due (seconds).
_TICK = 0.25
#: SSRCs of removed tracks whose late packets are dropped (the oldest are forgotten first).
_MAX_RETIRED = 64
#: SSRCs remembered as unroutable, so their packets skip the header-extension parse; a flood of
#: random SSRCs only ever empties this set, never the routes.
_MAX_UNROUTABLE = 256
#: Seconds between connectionQuality reports to a subscriber.
QUALITY_INTERVAL = 2.0
#: Between ticks, the layers are chosen again when the budget falls below this share of the
#: last allocation's and below what the chosen layers cost.
REALLOCATE_BELOW = 0.95
#: The least a publisher is asked to send (REMB): below it a camera is not worth decoding, and
#: a subscriber that cannot take it has the track paused instead.
MIN_PUBLISHER_CEILING = 100_000


def _open_to(layer: LayerReceiver, payload_type: int) -> bool:
    """Whether ``layer`` would latch a new SSRC sending ``payload_type`` (see ``_latch``)."""
    codec = layer.codec
    if payload_type == codec.payload_type:
        return layer.ssrc is None
    return payload_type == codec.rtx_payload_type and layer.rtx_ssrc is None


def _drop(data: bytes, now: float) -> None:
    """The route of a removed track's SSRC."""


class MediaConnection:
    def __init__(
        self,
        config: MediaConfig,
        on_failed: Callable[[str], None],
        on_connected: Callable[[], None],
        log: Any = None,
        track_settings: Callable[[str], TrackSettings] = lambda track_id: TrackSettings(),
    ) -> None:
        self.pc = ServerPeerConnection(config.ice_servers)
        self.pc.on_media_transport = self._attach
        self.transport: MediaTransport | None = None
        self.rtcp_ssrc = random.getrandbits(32) or 1
        self.publisher_clock = PublisherClock()
        self._config = config
        self._on_failed = on_failed
        self._on_connected = on_connected
        self._receivers: dict[str, TrackReceiver] = {}  # by mid
        self._routes: dict[int, RtpRoute] = {}  # ssrc -> handler: declared or latched, no more
        self._unroutable: set[int] = set()  # recent SSRCs no route would take
        self._retired: dict[int, str] = {}  # ssrc of a removed track -> its mid, oldest first
        self._down_tracks: dict[int, DownTrack] = {}  # by outgoing ssrc
        self._nack_pending: set[LayerReceiver] = set()
        self._nack_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._mid_ext_id: int | None = None
        self._rid_ext_id: int | None = None
        self._repaired_rid_ext_id: int | None = None
        self._reports_task: asyncio.Task[None] | None = None
        self._negotiated_at: float | None = None
        self._was_connected = False
        self.closed = False
        # RTCP feedback counters, read by sfu.counters at scrape time
        self.nacks_received = 0
        self.nacks_sent = 0
        self.plis_received = 0
        self.firs_received = 0
        self.plis_sent = 0
        self.rtp_unroutable = 0  # RTP packets on an SSRC no m-line declared or latched
        #: the subscriber side's layer choices; and where a publisher's wanted layers go
        self.allocation = SubscriberAllocation(track_settings)
        self.on_layer_activity: Callable[[str, tuple[LayerActivity, ...]], None] | None = None
        #: the subscriber side's estimate and probes
        self.bandwidth = SubscriberBandwidth(config.subscriber_max_bitrate)
        self._prober = Prober(self._loop, lambda: self.transport, self._padding, time.monotonic)
        self._prober.on_done = self._probe_next
        self._padder: DownTrack | None = None  # whose RTX stream carries probe padding
        self._transport_cc_id = 0
        self._last_budget: float | None = None  # of the last allocation
        self._unpaced: set[int] = set()  # payload types never paced (audio)
        #: transport-cc feedback to this participant as a publisher, where it negotiated it
        self.publisher_feedback: PublisherFeedback | None = None
        self.transport_feedback_received = 0
        self.bandwidth_pauses = 0  # video tracks paused because not even their lowest layer fit
        #: a video track of this subscriber paused (False) or resumed (True) for bandwidth
        self.on_stream_state: Callable[[str, bool], None] | None = None
        self.on_connection_quality: Callable[[ConnectionQualityReport], None] | None = None
        self._next_quality = 0.0
        self.log = log if log is not None else structlog.get_logger("sfu")
        self.pc.on("connectionstatechange", self._on_state_change)
        self.pc.on_ice_restart = self._on_ice_restart
        #: nothing has arrived for half the peer timeout, or the first connection is not up
        #: after half the connect timeout: the path may be dead while the peer lives (an ICE
        #: restart may find another); called once per silence
        self.on_silent: Callable[[], None] | None = None
        self._silent = False

    def _attach(self, transport: MediaTransport) -> None:
        self.transport = transport
        transport.transport_cc_id = self._transport_cc_id
        for payload_type in self._unpaced:
            transport.unpace(payload_type)
        transport.on_rtp = self._on_rtp
        transport.on_rtcp = self._on_rtcp
        transport.on_transport_feedback = self._on_transport_feedback
        if self._reports_task is None:
            self._reports_task = asyncio.ensure_future(self._run_reports())

    @property
    def connected(self) -> bool:
        return self.transport is not None and self.transport.connected

    def _on_state_change(self) -> None:
        state = self.pc.connectionState
        self.log.debug("connection state", state=state)
        if state == "connected" and not self._was_connected:
            self._was_connected = True
            self._on_connected()
        elif state in ("failed", "closed") and not self.closed:
            self._on_failed("ice-failed")

    def _on_ice_restart(self, ok: bool) -> None:
        # the new path may have lost packets a keyframe request would have asked for
        self.log.info("ice restarted" if ok else "ice restart failed")
        if ok and self._was_connected:  # else DTLS comes next, and "connected" with it
            self._on_connected()

    def negotiated(self) -> None:
        """An offer/answer exchange completed: the connection should come up soon."""
        if self._negotiated_at is None:
            self._negotiated_at = time.monotonic()

    # --- publishers' tracks (ingress) ---

    def add_receiver(self, receiver: TrackReceiver) -> None:
        params = receiver.params
        self._receivers[params.mid] = receiver
        if receiver.is_video and receiver.publisher_side is None:
            receiver.publisher_side = PublisherSide(receiver)
        extensions = params.extensions
        tcc_id = extensions.get(URI_TRANSPORT_CC)
        codec = params.primary
        if tcc_id is not None and codec is not None and TRANSPORT_CC in codec.feedback:
            if self.publisher_feedback is None:
                self.publisher_feedback = PublisherFeedback(tcc_id, self._send_rtcp, self._loop)
            self.publisher_feedback.ext_id = tcc_id
        self._mid_ext_id = extensions.get(URI_MID, self._mid_ext_id)
        self._rid_ext_id = extensions.get(URI_RID, self._rid_ext_id)
        self._repaired_rid_ext_id = extensions.get(URI_REPAIRED_RID, self._repaired_rid_ext_id)
        # the m-line publishes again: its SSRCs may come back, declared or not
        for ssrc in [s for s, mid in self._retired.items() if mid == params.mid]:
            del self._retired[ssrc]
            if self._routes.get(ssrc) is _drop:
                del self._routes[ssrc]
        if not receiver.simulcast:
            # simulcast layers are learned by rid: a declared SSRC does not say whose it is
            layer = receiver.layers[0]
            for ssrc in params.remote_ssrcs[:1]:
                self._routes[ssrc] = layer.on_rtp
            for rtx_ssrc, media_ssrc in params.remote_rtx.items():
                if media_ssrc in params.remote_ssrcs:
                    self._routes[rtx_ssrc] = layer.on_rtx
        self._forget_unroutable()

    def remove_receiver(self, receiver: TrackReceiver) -> None:
        mid = receiver.params.mid
        if self._receivers.get(mid) is receiver:
            del self._receivers[mid]
        layers = set(receiver.layers)
        for ssrc, route in list(self._routes.items()):
            if getattr(route, "__self__", None) in layers:
                self._retire(ssrc, mid)
        self._nack_pending -= layers

    def _retire(self, ssrc: int, mid: str) -> None:
        """Drop what still arrives on a removed track's SSRC, rather than learn it anew.

        A client that unpublishes by making its m-line inactive sends on it until it has applied
        our answer: learned as a new SSRC, those packets went to another m-line with the same
        payload type, whose subscribers then got them as that track's (and refused its own
        packets, numbered behind them). Declaring the SSRC again, or publishing on the same
        m-line, routes it anew.
        """
        self._retired.pop(ssrc, None)
        self._retired[ssrc] = mid
        self._routes[ssrc] = _drop
        if len(self._retired) > _MAX_RETIRED:
            oldest = next(iter(self._retired))
            del self._retired[oldest]
            if self._routes.get(oldest) is _drop:
                del self._routes[oldest]

    @property
    def receivers(self) -> Iterable[TrackReceiver]:
        return self._receivers.values()

    def _forget_unroutable(self) -> None:
        """A new m-line may take SSRCs no route would take before."""
        self._unroutable.clear()

    def _on_rtp(self, data: bytes, now: float) -> None:
        if len(data) < 12:
            return
        feedback = self.publisher_feedback
        if feedback is not None:
            feedback.on_rtp(data, now)
        ssrc = RTP_FIXED.unpack_from(data)[4]
        try:
            route = self._routes[ssrc]
        except KeyError:
            learned = self._learn(data, ssrc)
            if learned is None:
                self.rtp_unroutable += 1
                return
            route = learned
        route(data, now)

    def _learn(self, data: bytes, ssrc: int) -> RtpRoute | None:
        """Latch a new SSRC to a stream that has none yet, or None (the packet is dropped).

        By the mid extension (RFC 8843 §15) if the packet has one, else by a payload type that
        only one such m-line has; on a simulcast m-line, by the rid extension (its media stream)
        or the repaired-rid one (its RTX stream, RFC 8852 §3). A stream with an SSRC (declared
        or latched) takes no other: what a packet claims cannot move a stream, nor add one.
        """
        if ssrc in self._unroutable:
            return None
        payload_type = data[1] & 0x7F
        mid, rid, repaired_rid = self._stream_ids(data)
        layer: LayerReceiver | None = None
        if mid is not None:
            receiver = self._receivers.get(mid)
            if receiver is None:
                pass
            elif not receiver.simulcast:
                layer = receiver.layers[0]
            elif rid is not None or repaired_rid is not None:
                layer = receiver.layer(rid if rid is not None else repaired_rid or "")
        else:
            open_to = [
                r.layers[0]
                for r in self._receivers.values()
                if not r.simulcast and _open_to(r.layers[0], payload_type)
            ]
            if len(open_to) > 1:
                return None  # ambiguous: a later packet's mid may tell (not remembered)
            layer = open_to[0] if open_to else None
        route = None if layer is None else self._latch(layer, ssrc, payload_type)
        if route is None:
            if len(self._unroutable) >= _MAX_UNROUTABLE:
                self._unroutable.clear()
            self._unroutable.add(ssrc)
            if self.transport is not None:
                # libsrtp made a stream for it when it decrypted this packet: a flood of random
                # SSRCs would leave thousands, searched through for every packet after
                self.transport.forget_remote_ssrc(ssrc)
        return route

    def _stream_ids(self, data: bytes) -> tuple[str | None, str | None, str | None]:
        """The mid, rid and repaired-rid a packet carries (RFC 8852), each None if absent."""
        if self._mid_ext_id is None or not data[0] & 0x10:
            return None, None, None
        try:
            elements = parse_extensions(data)
        except ValueError:
            return None, None, None
        ids = (self._mid_ext_id, self._rid_ext_id, self._repaired_rid_ext_id)
        mid, rid, repaired = (
            None if key is None or (v := elements.get(key)) is None else v.decode(errors="replace")
            for key in ids
        )
        return mid, rid, repaired

    def _latch(self, layer: LayerReceiver, ssrc: int, payload_type: int) -> RtpRoute | None:
        """Route ``ssrc`` to ``layer``'s media or RTX stream, if that has no SSRC yet.

        One media SSRC and one RTX SSRC per stream. When the media SSRC is latched and the SDP
        paired an RTX SSRC with it (a=ssrc-group:FID, as Firefox declares its layers), that RTX
        SSRC follows it to this layer.
        """
        if not _open_to(layer, payload_type):
            return None
        route: RtpRoute
        if payload_type == layer.codec.payload_type:
            layer.ssrc, route = ssrc, layer.on_rtp
            for rtx_ssrc, media_ssrc in layer.track.params.remote_rtx.items():
                if media_ssrc == ssrc and layer.rtx_ssrc is None and rtx_ssrc not in self._routes:
                    layer.rtx_ssrc = rtx_ssrc
                    self._routes[rtx_ssrc] = layer.on_rtx
        else:
            layer.rtx_ssrc, route = ssrc, layer.on_rtx
        self._routes[ssrc] = route
        self.log.debug(
            "ssrc latched", mid=layer.track.params.mid, rid=layer.rid, ssrc=ssrc, pt=payload_type
        )
        return route

    # --- subscribers' down-tracks (egress) ---

    def add_down_track(self, down_track: DownTrack) -> None:
        self._down_tracks[down_track.ssrc] = down_track
        params = down_track.stream.params
        ext_id = params.extensions.get(URI_TRANSPORT_CC)
        if ext_id is not None:  # one numbering for the whole transport (BUNDLE)
            self._transport_cc_id = ext_id
            if self.transport is not None:
                self.transport.transport_cc_id = ext_id
        codec = params.primary
        if ext_id is not None or (codec is not None and "goog-remb" in codec.feedback):
            self.bandwidth.negotiated = True
        if params.kind == "audio" and codec is not None and codec.payload_type not in self._unpaced:
            self._unpaced.add(codec.payload_type)
            if self.transport is not None:
                self.transport.unpace(codec.payload_type)

    def remove_down_track(self, down_track: DownTrack) -> None:
        if self._down_tracks.get(down_track.ssrc) is down_track:
            del self._down_tracks[down_track.ssrc]
        if self._padder is down_track:
            # its source is another participant's track: kept here, it kept that whole
            # participant alive after it left, and through its connection's own padder the
            # one before, and so on (a soak of 553 visitors grew the server by 0.55 MB each)
            self._padder = None

    # --- RTCP in ---

    def _on_rtcp(self, data: bytes) -> None:
        try:
            packets = rtcp.parse_compound(data)
        except ValueError:
            return
        now = time.monotonic()
        transport = self.transport
        for packet in packets:
            if isinstance(packet, rtcp.SenderReport):
                self._on_sender_report(packet, now)
                self._on_report_blocks(packet.reports)
            elif isinstance(packet, rtcp.ReceiverReport):
                self._on_report_blocks(packet.reports)
            elif isinstance(packet, rtcp.Nack):
                self.nacks_received += 1
                down_track = self._down_tracks.get(packet.media_ssrc)
                if down_track is not None:
                    down_track.on_nack(packet.lost)
            elif isinstance(packet, rtcp.Pli):
                self.plis_received += 1
                self._on_keyframe_request(packet.media_ssrc)
            elif isinstance(packet, rtcp.Fir):
                self.firs_received += 1
                for ssrc, _ in packet.entries:
                    self._on_keyframe_request(ssrc)
            elif isinstance(packet, TransportFeedback):
                self.transport_feedback_received += 1
                summary = None if transport is None else transport.transport_feedback(packet.fci)
                if summary is not None:
                    self._on_feedback(summary, now)
            elif isinstance(packet, rtcp.Remb):
                ours = False
                for ssrc in packet.ssrcs:
                    down_track = self._down_tracks.get(ssrc)
                    if down_track is not None:
                        down_track.on_remb(packet.bitrate)
                        ours = True
                if ours:
                    self.bandwidth.on_remb(packet.bitrate, now)

    def _on_transport_feedback(self, packet: bytes, raw: EgressFeedback, now: float) -> None:
        """A lone transport-cc feedback message, matched by the egress (no compound parse)."""
        self.transport_feedback_received += 1
        self._on_feedback(FeedbackSummary.from_egress(raw), now)

    def _on_feedback(self, summary: FeedbackSummary, now: float) -> None:
        """The subscriber's transport-wide feedback; a fall of the estimate below what its
        layers cost is acted on at once, not at the next tick: every tick later is another
        250 ms of sending more than the link carries."""
        bandwidth = self.bandwidth
        bandwidth.on_feedback(summary, now)
        budget, before = bandwidth.current_budget(), self._last_budget
        if (
            budget is not None
            and before is not None
            and budget < self.allocation.last.allocated
            and budget < before * REALLOCATE_BELOW  # fell since (not: has not fit for a while)
            and self._config.congestion_control
            and not self.closed
        ):
            self.choose_layers(now, tick=False)

    def _on_sender_report(self, report: rtcp.SenderReport, now: float) -> None:
        now_wall = time.time()
        for receiver in self._receivers.values():
            for layer in receiver.layers:
                if layer.ssrc == report.ssrc:
                    layer.on_sender_report(
                        report.ntp_timestamp, report.rtp_timestamp, now, now_wall
                    )

    def _on_report_blocks(self, blocks: list[rtcp.ReportBlock]) -> None:
        now_wall = time.time()
        for block in blocks:
            down_track = self._down_tracks.get(block.ssrc)
            if down_track is not None:
                down_track.on_report_block(block, now_wall)
                if down_track.rtt is not None:
                    self.bandwidth.on_rtt(down_track.rtt, time.monotonic())

    def _on_keyframe_request(self, ssrc: int) -> None:
        down_track = self._down_tracks.get(ssrc)
        if down_track is not None:
            down_track.on_keyframe_request()

    # --- RTCP out (the Upstream interface of our receivers) ---

    def send_rtcp(self, packets: list[rtcp.RtcpPacket]) -> None:
        if self.transport is not None and packets:
            self.transport.send_rtcp(rtcp.serialize(packets))

    def _send_rtcp(self, packet: bytes) -> None:
        if self.transport is not None:
            self.transport.send_rtcp(packet)

    def request_keyframe_now(self, media_ssrc: int) -> None:
        self.log.debug("keyframe requested", ssrc=media_ssrc, connected=self.connected)
        if self.transport is not None:
            self.plis_sent += 1
        self.send_rtcp([rtcp.Pli(sender_ssrc=self.rtcp_ssrc, media_ssrc=media_ssrc)])

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self._loop.call_later(delay, callback)

    def schedule_nack(self, layer: LayerReceiver) -> None:
        if layer in self._nack_pending:
            return
        self._nack_pending.add(layer)
        if self._nack_timer is None:
            # the first NACK for a gap goes out at once; retries follow on the timer
            self._send_nacks()

    def _send_nacks(self) -> None:
        self._nack_timer = None
        now = time.monotonic()
        packets: list[rtcp.RtcpPacket] = []
        for layer in list(self._nack_pending):
            loss = layer.loss
            if loss is None or layer.ssrc is None or layer.closed:
                self._nack_pending.discard(layer)
                continue
            lost = loss.due(now, 0.02)
            if lost:
                packets.append(
                    rtcp.Nack(
                        sender_ssrc=self.rtcp_ssrc,
                        media_ssrc=layer.ssrc,
                        lost=[seq & 0xFFFF for seq in lost],
                    )
                )
            if not loss.missing:
                self._nack_pending.discard(layer)
        self.nacks_sent += len(packets)
        self.send_rtcp(packets)
        if self._nack_pending and not self.closed:
            self._nack_timer = self._loop.call_later(_NACK_INTERVAL, self._send_nacks)

    # --- periodic reports and liveness ---

    async def _run_reports(self) -> None:
        interval = self._config.rtcp_interval
        next_report = time.monotonic() + interval * random.random()
        while not self.closed:
            await asyncio.sleep(_TICK)
            if self.closed:
                return
            self._check_liveness()
            now = time.monotonic()
            self.allocate_layers(now)
            if now >= next_report and self.connected:
                # RFC 3550 §6.3.1: randomize to 0.5-1.5 times the interval
                next_report = now + interval * (0.5 + random.random())
                self._send_reports()

    def allocate_layers(self, now: float) -> None:
        """Measure this publisher's layers, say which it must send; choose this subscriber's."""
        for receiver in self._receivers.values():
            side = receiver.publisher_side
            if side is None:
                continue
            side.sample(now)
            activity = side.activity(now)
            if activity is not None and self.on_layer_activity is not None:
                self.on_layer_activity(receiver.info.track_id, activity)
        self.choose_layers(now)

    def choose_layers(self, now: float, *, tick: bool = True) -> None:
        """Point each of this subscriber's video down-tracks at the layer its budget allows;
        probe for more when something is held back; report pauses and quality. ``tick``: the
        periodic run, which samples the counters (else: the estimate just fell, act now)."""
        transport = self.transport
        down_tracks = self._down_tracks.values()
        bandwidth = self.bandwidth
        if tick:
            audio = [
                (d.stream.octets_sent, d.stream.packets_sent)
                for d in down_tracks
                if not d.source.is_video
            ]
            sent = 0 if transport is None else transport.bytes_sent
            budget = bandwidth.budget(now, sent, audio)
        else:
            budget = bandwidth.current_budget()
        controlled = self._config.congestion_control
        if transport is not None:  # paced on a measured estimate only, not on a guess
            paced = bandwidth.pacing_rate(now, fell=not tick)
            transport.pacing_rate = paced if controlled else 0
        if not controlled:
            budget = None
        self._last_budget = budget
        before = self.allocation.last.paused
        result = self.allocation.run(down_tracks, now, budget, may_pause=bandwidth.may_pause(now))
        self.bandwidth_pauses += len(result.paused - before)
        if self.on_stream_state is not None:
            for track_id in result.paused - before:
                self.on_stream_state(track_id, False)
            for track_id in before - result.paused:
                self.on_stream_state(track_id, True)
        if budget is not None:
            self._probe_next(result.wanted)
        if now >= self._next_quality and self.connected and self._down_tracks:
            self._next_quality = now + QUALITY_INTERVAL
            rtts = [d.rtt for d in down_tracks if d.rtt is not None]
            quality = bandwidth.quality(
                max(rtts, default=None), result.allocated, bool(result.paused), result.limited
            )
            if self.on_connection_quality is not None:
                self.on_connection_quality(quality)
            stats = bandwidth.stats()
            self.log.debug(
                "bandwidth",
                source=stats.source,
                estimate=round(stats.estimate),
                delay_based=round(stats.delay_based),
                loss_based=round(stats.loss_based),
                state=stats.state,
                loss=round(stats.loss_fraction, 3),
                acked=None if stats.acked_bitrate is None else round(stats.acked_bitrate),
                sent=round(bandwidth.send_rate),
                alr=stats.alr,
                allocated=round(result.allocated),
                wanted=None if result.wanted is None else round(result.wanted),
                paused=sorted(result.paused),
                probes=self.probe_clusters,
                feedback=self.transport_feedback_received,
                capacity_drops=bandwidth.estimator.capacity_drops,
                tcc_id=self._transport_cc_id,
            )

    def _probe_next(self, wanted: float | None = None) -> None:
        """Start the next probe cluster the estimator asks for, if any: on the tick, and as soon
        as one has gone out (the initial probes follow each other at once)."""
        if self.closed or not self.connected or self._prober.running:
            return
        bandwidth = self.bandwidth
        cluster = bandwidth.probe(wanted, time.monotonic())
        if cluster is not None:
            self._prober.start(cluster, bandwidth.send_rate)

    @property
    def probe_clusters(self) -> int:
        """Probe clusters sent to this subscriber so far."""
        return self._prober.clusters

    def _padding(self, size: int) -> bytes | None:
        """A padding packet for a probe, on the RTX stream of some video m-line (the one used
        last while it lasts: a cluster sends hundreds, and a search per packet would walk
        every down-track of the connection each time)."""
        padder = self._padder
        if padder is None or padder.closed or self._down_tracks.get(padder.ssrc) is not padder:
            padder = self._padder = next(
                (
                    d
                    for d in self._down_tracks.values()
                    if d.source.is_video and not d.closed and d.has_rtx
                ),
                None,
            )
        return None if padder is None else padder.padding_packet(size)

    def _check_liveness(self) -> None:
        now = time.monotonic()
        transport = self.transport
        if self._was_connected and transport is not None:
            quiet = now - transport.last_activity
            if quiet > self._config.peer_timeout:
                self._on_failed("timeout")
            elif quiet > self._config.peer_timeout / 2 and not self._silent:
                self._silent = True
                self.log.info("peer silent", seconds=round(quiet, 1))
                if self.on_silent is not None:
                    self.on_silent()
            elif quiet < self._config.peer_timeout / 2:
                self._silent = False
        elif self._negotiated_at is not None:
            waited = now - self._negotiated_at
            if waited > self._config.connect_timeout:
                self._on_failed("ice-failed")
            elif waited > self._config.connect_timeout / 2 and not self._silent:
                # not up yet: retried with an ICE restart before anyone is told it failed
                self._silent = True
                self.log.info("not connected yet", seconds=round(waited, 1))
                if self.on_silent is not None:
                    self.on_silent()

    def _send_reports(self) -> None:
        now, now_wall = time.monotonic(), time.time()
        layers = [layer for r in self._receivers.values() for layer in r.layers]
        blocks = [b for layer in layers if (b := layer.report_block(now)) is not None]
        reports = [sr for d in self._down_tracks.values() if (sr := d.sender_report(now, now_wall))]
        remb_ssrcs = [
            layer.ssrc
            for layer in layers
            if layer.is_video and layer.ssrc is not None and "goog-remb" in layer.codec.feedback
        ]
        compounds: list[list[rtcp.RtcpPacket]] = []
        first: list[rtcp.RtcpPacket] = [
            rtcp.ReceiverReport(ssrc=self.rtcp_ssrc, reports=blocks[:_MAX_BLOCKS])
        ]
        if remb_ssrcs:
            first.append(
                rtcp.Remb(
                    sender_ssrc=self.rtcp_ssrc,
                    bitrate=self.publisher_ceiling(),
                    ssrcs=remb_ssrcs,
                )
            )
        compounds.append(first)
        for i in range(0, len(reports), _MAX_SR_PER_COMPOUND):
            compounds.append(list(reports[i : i + _MAX_SR_PER_COMPOUND]))
        for packets in compounds:
            self.send_rtcp(packets)

    def publisher_ceiling(self) -> int:
        """The bit/s this participant's video should not exceed (REMB): within the configured
        maximum, no more than the best-placed subscriber of each single-layer track can take.

        A simulcast track is left at the maximum: each subscriber takes the layer that fits, and
        layers nobody takes are turned off (publisherLayers). So is a track with a subscriber
        whose link gives no estimate, or none at all (a new subscriber's link is unknown).
        """
        maximum = self._config.publisher_max_bitrate
        total = 0.0
        for receiver in self._receivers.values():
            if not receiver.is_video:
                continue
            allowances = [d.allowance for d in receiver.down_tracks]
            if receiver.simulcast or not allowances or None in allowances:
                return maximum
            total += max(a for a in allowances if a is not None)
        if total == 0.0:
            return maximum
        return int(min(maximum, max(total, MIN_PUBLISHER_CEILING)))

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._prober.stop()
        if self.publisher_feedback is not None:
            self.publisher_feedback.close()
        if self._nack_timer is not None:
            self._nack_timer.cancel()
        if self._reports_task is not None:
            self._reports_task.cancel()
        for receiver in list(self._receivers.values()):
            self.remove_receiver(receiver)
        self._down_tracks.clear()
        self._padder = None
        await self.pc.close()
