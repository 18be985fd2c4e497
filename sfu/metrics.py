"""Prometheus metrics of one :class:`~sfu.service.Sfu`, computed when scraped.

Nothing is counted here: :class:`SfuCollector` walks the rooms at scrape time and reads the
integers the media objects keep anyway (see ``sfu.counters``), plus the sampled forwarding-time
histogram (``sfu.media.latency``). The registry also carries prometheus-client's process
collector (CPU seconds, resident memory, open file descriptors), its platform and GC collectors.
The metric names are listed in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from sfu.counters import DOWN_TRACK_STATES, LayerGauges, MediaTotals, layer_gauges
from sfu.media.aiortc_bridge import udp_port_io, udp_port_unroutable
from sfu.media.bandwidth import ESTIMATES
from sfu.media.latency import FORWARDING, SAMPLE_EVERY, Histogram

if TYPE_CHECKING:
    from sfu.service import Sfu

KINDS = ("audio", "video")


class SfuCollector:
    """A prometheus-client custom collector reading one service's rooms and totals."""

    def __init__(self, service: Sfu, latency: Histogram = FORWARDING) -> None:
        self._service = service
        self._latency = latency

    def collect(self) -> Iterator[Metric]:
        service = self._service
        rooms = list(service.rooms_by_id.values())
        participants = [p for room in rooms for p in room.participants.values()]
        published = [t for p in participants for t in p.published.values()]
        tracks = Counter[str]()
        down_tracks = Counter[str]()
        for track in published:
            tracks[track.info.kind] += 1
            down_tracks[track.info.kind] += len(track.down_tracks)
        yield GaugeMetricFamily("sfu_rooms", "Rooms with at least one participant.", len(rooms))
        yield GaugeMetricFamily(
            "sfu_participants", "Participants in a room.", value=len(participants)
        )
        yield _by_kind(
            GaugeMetricFamily("sfu_published_tracks", "Tracks published.", labels=["kind"]),
            tracks,
        )
        yield _by_kind(
            GaugeMetricFamily(
                "sfu_down_tracks",
                "Forwarding paths from a published track to one subscriber.",
                labels=["kind"],
            ),
            down_tracks,
        )
        yield from _layer_gauges(layer_gauges(published))
        yield CounterMetricFamily(
            "sfu_participants_joined", "Participants admitted.", service.joined_total
        )
        yield CounterMetricFamily(
            "sfu_participants_left",
            "Participants gone (left, timed out, failed).",
            service.left_total,
        )
        yield from _counters(service.media_totals())
        unroutable = udp_port_unroutable()
        if unroutable is not None:  # only with the one UDP port (--udp-port)
            family = CounterMetricFamily(
                "sfu_udp_unroutable",
                "Datagrams to the shared UDP port that no connection was theirs (an unknown "
                "ICE username or transaction, media from an address no check authenticated), "
                "dropped unanswered, by kind: stun, media (DTLS, RTP, RTCP), other.",
                labels=["kind"],
            )
            for kind, count in unroutable.items():
                family.add_metric([kind], count)
            yield family
        io = udp_port_io()
        if io is not None:
            for name, help_text, value in (
                ("sfu_udp_reads", "recvmmsg calls of the shared UDP port that returned.", io[0]),
                (
                    "sfu_udp_datagrams_read",
                    "Datagrams those calls read (÷ sfu_udp_reads: datagrams per call).",
                    io[1],
                ),
                (
                    "sfu_udp_send_batches",
                    "sendmmsg calls of the shared UDP port: what one read's packets make leaves "
                    "in one call per socket.",
                    io[2],
                ),
                (
                    "sfu_udp_batched_datagrams",
                    "Datagrams those calls sent (÷ sfu_udp_send_batches: datagrams per call).",
                    io[3],
                ),
            ):
                yield CounterMetricFamily(name, help_text, value)
        yield GaugeMetricFamily(
            "sfu_event_loop_tasks",
            "asyncio tasks alive on the server's event loop (a count that only grows is a leak).",
            value=_tasks(),
        )
        yield _histogram(self._latency)
        yield HistogramMetricFamily(
            "sfu_subscriber_bandwidth_estimate_bps",
            "Subscribers' downlink estimates (transport-cc or REMB), bit/s, observed every 2 s "
            "per subscriber connection.",
            buckets=[(_le(bound), n) for bound, n in ESTIMATES.cumulative()],
            sum_value=ESTIMATES.sum,
        )


def _by_kind(family: GaugeMetricFamily, counts: Mapping[str, int]) -> GaugeMetricFamily:
    for kind in KINDS:
        family.add_metric([kind], counts[kind])
    return family


def _layer_gauges(g: LayerGauges) -> Iterator[Metric]:
    states = GaugeMetricFamily(
        "sfu_down_tracks_by_state",
        "Down-tracks by what they do: forwarding one layer; switching (forwarding one, waiting "
        "for a keyframe of another); starting (waiting for the first keyframe, or audio packet, "
        "it can start with); paused (the subscriber paused the track: nothing forwarded).",
        labels=["kind", "state"],
    )
    for kind in KINDS:
        for state in DOWN_TRACK_STATES:
            states.add_metric([kind, state], g.down_tracks[kind, state])
    yield states
    layers = GaugeMetricFamily(
        "sfu_publisher_layers",
        "Simulcast layers of published tracks: active, or inactive (nobody receives it: its "
        "publisher was told to stop sending it, publisherLayers).",
        labels=["state"],
    )
    layers.add_metric(["active"], g.layers_active)
    layers.add_metric(["inactive"], g.layers_inactive)
    yield layers


def _counter_by_kind(name: str, documentation: str, audio: int, video: int) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=["kind"])
    family.add_metric(["audio"], audio)
    family.add_metric(["video"], video)
    return family


def _counters(t: MediaTotals) -> Iterator[Metric]:
    yield _counter_by_kind(
        "sfu_rtp_packets_received",
        "RTP packets received from publishers (retransmissions included).",
        t.packets_received_audio,
        t.packets_received_video,
    )
    yield _counter_by_kind(
        "sfu_rtp_bytes_received",
        "Bytes of RTP received from publishers, headers included, after SRTP.",
        t.bytes_received_audio,
        t.bytes_received_video,
    )
    yield _counter_by_kind(
        "sfu_rtp_packets_forwarded",
        "RTP packets forwarded to subscribers (not counting retransmissions).",
        t.packets_forwarded_audio,
        t.packets_forwarded_video,
    )
    yield _counter_by_kind(
        "sfu_rtp_payload_bytes_forwarded",
        "Payload bytes of the RTP packets forwarded to subscribers.",
        t.payload_bytes_forwarded_audio,
        t.payload_bytes_forwarded_video,
    )
    dropped = CounterMetricFamily(
        "sfu_rtp_packets_dropped",
        "RTP packets from publishers not forwarded: refused by the sequence check (duplicates, "
        "jumps not confirmed, RFC 3550 A.1), retransmissions of nothing missing, or on an SSRC "
        "no m-line declared or latched.",
        labels=["reason"],
    )
    dropped.add_metric(["sequence"], t.packets_dropped_sequence)
    dropped.add_metric(["retransmission"], t.packets_dropped_retransmission)
    dropped.add_metric(["unknown_ssrc"], t.packets_dropped_unknown_ssrc)
    yield dropped
    keyframes = CounterMetricFamily(
        "sfu_keyframe_requests",
        "Keyframe requests (PLI) sent to publishers, by the reason of the first request each "
        "answers (others within the throttle interval join it): subscriber (a subscriber's "
        "PLI/FIR), start (a down-track starting, or switching layer, waits for a keyframe), "
        "retry (repeated every second while down-tracks still wait).",
        labels=["reason"],
    )
    keyframes.add_metric(["subscriber"], t.keyframe_requests_subscriber)
    keyframes.add_metric(["start"], t.keyframe_requests_start)
    keyframes.add_metric(["retry"], t.keyframe_requests_retry)
    yield keyframes
    plain = (
        ("sfu_packets_sent", "SRTP and SRTCP datagrams sent (media, RTCP).", t.packets_sent),
        ("sfu_bytes_sent", "Bytes of the SRTP and SRTCP datagrams sent.", t.bytes_sent),
        (
            "sfu_send_errors",
            "Datagrams not sent: socket buffer full, or SRTP refused the packet.",
            t.send_errors,
        ),
        (
            "sfu_retransmissions",
            "Packets resent to subscribers that NACKed them.",
            t.retransmissions,
        ),
        (
            "sfu_layer_switches",
            "Simulcast layer switches: a down-track went on with another layer of its track "
            "(at that layer's keyframe).",
            t.layer_switches,
        ),
        (
            "sfu_nacks_received",
            "Generic NACK messages received from subscribers.",
            t.nacks_received,
        ),
        ("sfu_nacks_sent", "Generic NACK messages sent to publishers.", t.nacks_sent),
        ("sfu_plis_received", "Picture loss indications from subscribers.", t.plis_received),
        ("sfu_firs_received", "Full intra requests from subscribers.", t.firs_received),
        ("sfu_plis_sent", "Picture loss indications sent to publishers.", t.plis_sent),
        (
            "sfu_transport_feedback_received",
            "Transport-cc feedback messages from subscribers (each covers many packets).",
            t.transport_feedback_received,
        ),
        (
            "sfu_transport_feedback_sent",
            "Transport-cc feedback messages to publishers that negotiated it (their own "
            "send-side estimators run on it).",
            t.transport_feedback_sent,
        ),
        (
            "sfu_paced_packets",
            "RTP packets to subscribers that waited in the pacer (sent faster than 2.5x the "
            "subscriber's estimate: keyframe bursts).",
            t.paced,
        ),
        (
            "sfu_pacer_drops",
            "RTP packets to subscribers dropped because the pacer's queue was full (also in "
            "sfu_send_errors).",
            t.pacer_drops,
        ),
        (
            "sfu_probe_clusters",
            "Probe clusters sent to subscribers to find out whether their link takes more.",
            t.probe_clusters,
        ),
        (
            "sfu_bandwidth_layer_upgrades",
            "A subscriber's video track moved up a layer (or resumed) as its estimate allowed.",
            t.layer_upgrades,
        ),
        (
            "sfu_bandwidth_layer_downgrades",
            "A subscriber's video track moved down a layer (or paused) to fit its estimate.",
            t.layer_downgrades,
        ),
        (
            "sfu_bandwidth_pauses",
            "A subscriber's video track paused: not even its lowest layer fit the estimate.",
            t.bandwidth_pauses,
        ),
    )
    for name, documentation, value in plain:
        yield CounterMetricFamily(name, documentation, value)


def _histogram(latency: Histogram) -> Metric:
    return HistogramMetricFamily(
        "sfu_forwarding_latency_seconds",
        f"SFU-internal forwarding latency: from reading a packet off the socket to sending "
        f"one subscriber's copy (the copies before it included), sampled: one packet in "
        f"{SAMPLE_EVERY} per published track, observed once per copy.",
        buckets=[(_le(bound), n) for bound, n in latency.cumulative()],
        sum_value=latency.sum,
    )


def _tasks() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # collected outside the loop (a test): none of its tasks to count
        return 0


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


def build_registry(service: Sfu, *, process: bool = True) -> CollectorRegistry:
    """A registry with the service's metrics and, if ``process``, this process's."""
    registry = CollectorRegistry()
    registry.register(SfuCollector(service))
    if process:
        registry.register(ProcessCollector(registry=None))
        registry.register(PLATFORM_COLLECTOR)
        registry.register(GC_COLLECTOR)
    return registry
