"""Totals of what the media plane did, summed from the counters its objects already keep.

Nothing here runs per packet: the receivers, outgoing streams and transports count as they go
(plain integer increments), and these functions add those counters up when someone asks — a
Prometheus scrape. The counters of a participant who left are folded into a running total kept
by the service (:meth:`MediaTotals.add`), so totals never go backwards. The gauges of
:func:`layer_gauges` are read off the live tracks the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sfu.media.connection import MediaConnection
    from sfu.media.downtrack import DownTrack, OutgoingStream
    from sfu.media.receiver import TrackReceiver
    from sfu.participant import Participant


@dataclass(slots=True)
class MediaTotals:
    """Monotonic counters; the ``*_audio`` / ``*_video`` pairs are split by track kind."""

    # RTP from publishers, as decrypted (header included; retransmissions count once more)
    packets_received_audio: int = 0
    packets_received_video: int = 0
    bytes_received_audio: int = 0
    bytes_received_video: int = 0
    # RTP forwarded to subscribers (payload bytes, as in RTCP sender reports)
    packets_forwarded_audio: int = 0
    packets_forwarded_video: int = 0
    payload_bytes_forwarded_audio: int = 0
    payload_bytes_forwarded_video: int = 0
    # RTP from publishers dropped before forwarding: refused by the sequence check (RFC 3550
    # §A.1 probation, duplicates), RTX of nothing missing, or on an SSRC that no m-line declared
    # or latched
    packets_dropped_sequence: int = 0
    packets_dropped_retransmission: int = 0
    packets_dropped_unknown_ssrc: int = 0
    # every SRTP and SRTCP datagram written (forwarded media, retransmissions, RTCP)
    packets_sent: int = 0
    bytes_sent: int = 0
    # datagrams not sent: the socket buffer was full, or SRTP refused the packet
    send_errors: int = 0
    retransmissions: int = 0
    layer_switches: int = 0
    # RTCP feedback messages
    nacks_received: int = 0
    nacks_sent: int = 0
    plis_received: int = 0
    firs_received: int = 0
    plis_sent: int = 0
    # keyframe requests to publishers by reason (sfu.media.layer.KeyframeReason)
    keyframe_requests_subscriber: int = 0
    keyframe_requests_start: int = 0
    keyframe_requests_retry: int = 0
    # subscribers' bandwidth: feedback, probes, and what the estimate made the layers do
    transport_feedback_received: int = 0
    transport_feedback_sent: int = 0
    probe_clusters: int = 0
    paced: int = 0  # RTP packets that waited in a subscriber connection's pacer
    pacer_drops: int = 0  # ... and that found its queue full
    layer_upgrades: int = 0
    layer_downgrades: int = 0
    bandwidth_pauses: int = 0

    def add(self, other: MediaTotals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> MediaTotals:
        result = MediaTotals()
        result.add(self)
        return result

    def add_receiver(self, receiver: TrackReceiver) -> None:
        for layer in receiver.layers:
            self.packets_dropped_sequence += layer.packets_dropped
            self.packets_dropped_retransmission += layer.retransmissions_dropped
            sent = layer.keyframes.sent
            self.keyframe_requests_subscriber += sent["subscriber"]
            self.keyframe_requests_start += sent["start"]
            self.keyframe_requests_retry += sent["retry"]
            if layer.is_video:
                self.packets_received_video += layer.packets_received
                self.bytes_received_video += layer.bytes_received
            else:
                self.packets_received_audio += layer.packets_received
                self.bytes_received_audio += layer.bytes_received

    def add_stream(self, stream: OutgoingStream) -> None:
        if stream.params.kind == "video":
            self.packets_forwarded_video += stream.packets_sent
            self.payload_bytes_forwarded_video += stream.octets_sent
        else:
            self.packets_forwarded_audio += stream.packets_sent
            self.payload_bytes_forwarded_audio += stream.octets_sent
        self.retransmissions += stream.retransmissions
        self.layer_switches += stream.layer_switches

    def add_connection(self, connection: MediaConnection) -> None:
        transport = connection.transport
        if transport is not None:
            self.packets_sent += transport.packets_sent
            self.bytes_sent += transport.bytes_sent
            self.send_errors += transport.send_errors
            paced, dropped = transport.pacer_counts
            self.paced += paced
            self.pacer_drops += dropped
        self.packets_dropped_unknown_ssrc += connection.rtp_unroutable
        self.nacks_received += connection.nacks_received
        self.nacks_sent += connection.nacks_sent
        self.plis_received += connection.plis_received
        self.firs_received += connection.firs_received
        self.plis_sent += connection.plis_sent
        self.transport_feedback_received += connection.transport_feedback_received
        if connection.publisher_feedback is not None:
            self.transport_feedback_sent += connection.publisher_feedback.messages
        self.probe_clusters += connection.probe_clusters
        self.layer_upgrades += connection.allocation.upgrades
        self.layer_downgrades += connection.allocation.downgrades
        self.bandwidth_pauses += connection.bandwidth_pauses


def participant_totals(participant: Participant) -> MediaTotals:
    """Everything one participant's connection did so far, including tracks it unpublished."""
    totals = participant.unpublished_totals.copy()
    for receiver in participant.published.values():
        totals.add_receiver(receiver)
    for subscription in participant.subscriptions:
        if subscription.stream is not None:
            totals.add_stream(subscription.stream)
    totals.add_connection(participant.connection)
    return totals


#: What a down-track does: forwards a layer; forwards one and waits for another's keyframe;
#: waits for the first keyframe (or first audio packet) it can start with; forwards nothing.
DOWN_TRACK_STATES = ("forwarding", "switching", "starting", "paused")


def down_track_state(down_track: DownTrack) -> str:
    if down_track.layer is None:
        return "paused" if down_track.target is None else "starting"
    return "forwarding" if down_track.target is None else "switching"


@dataclass(slots=True)
class LayerGauges:
    """What the live tracks' down-tracks and simulcast layers are doing now."""

    #: (kind, state) -> down-tracks, state one of DOWN_TRACK_STATES
    down_tracks: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: simulcast layers of published tracks the publisher sends, or was told to stop sending
    layers_active: int = 0
    layers_inactive: int = 0


def layer_gauges(tracks: Iterable[TrackReceiver]) -> LayerGauges:
    gauges = LayerGauges()
    for track in tracks:
        for down_track in track.down_tracks:
            gauges.down_tracks[track.info.kind, down_track_state(down_track)] += 1
        side = track.publisher_side
        if side is not None and track.simulcast:
            inactive = len(side.inactive.intersection(track.params.rids))
            gauges.layers_inactive += inactive
            gauges.layers_active += len(track.layers) - inactive
    return gauges
