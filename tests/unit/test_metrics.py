"""The metric pieces without a network: the sampled histogram, the counters and the collector."""

from __future__ import annotations

import asyncio
from unittest.mock import patch

import pytest
from aioice.stun import Class, Message, Method
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sfu.config import MediaConfig
from sfu.counters import MediaTotals
from sfu.media import aiortc_bridge as bridge
from sfu.media import latency
from sfu.media import layer as layer_module
from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu.media.connection import MediaConnection
from sfu.media.downtrack import DownTrack, OutgoingStream
from sfu.media.latency import Histogram
from sfu.metrics import build_registry
from sfu.rtp import rtcp
from sfu.service import Sfu

from .media_doubles import RecordingSink, publisher_receiver, subscriber_params, vp8_packet

# --- the histogram ---


def test_observations_land_in_the_first_bucket_whose_bound_is_not_below() -> None:
    histogram = Histogram((0.001, 0.002))
    for seconds in (0.0005, 0.001, 0.0015, 0.002, 0.5):
        histogram.observe(seconds)
    assert histogram.counts == [2, 2, 1]
    assert histogram.cumulative() == [(0.001, 2), (0.002, 4), (float("inf"), 5)]
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(0.505)


def test_weighted_observation_counts_once_per_subscriber() -> None:
    histogram = Histogram((0.001,))
    histogram.observe(0.0004, 16)
    assert histogram.counts == [16, 0]
    assert histogram.sum == pytest.approx(0.0064)


@pytest.mark.parametrize("bounds", [(), (0.002, 0.001), (0.001, 0.001)])
def test_bounds_must_increase(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Histogram(bounds)


# --- counters kept by the media objects ---


async def test_one_packet_in_sample_every_is_timed_from_arrival_per_copy() -> None:
    connection = MediaConnection(MediaConfig(), lambda reason: None, lambda: None)
    now = [0.0]

    def clock() -> float:  # each read is 10 µs after the previous one
        now[0] += 0.000_010
        return now[0]

    receiver = publisher_receiver(connection, clock)
    stream = OutgoingStream(subscriber_params(), 500, 9000)
    sinks = [RecordingSink() for _ in range(3)]
    for sink in sinks:
        receiver.add_down_track(DownTrack(receiver, stream, sink))
    histogram = Histogram((0.000_015, 0.000_025, 0.000_035))
    try:
        with patch.object(layer_module, "FORWARDING", histogram):
            for seq in range(2 * latency.SAMPLE_EVERY):
                now[0] = seq / 1000
                receiver.layers[0].on_rtp(vp8_packet(seq, keyframe=seq == 0), now[0])
    finally:
        await connection.close()
    # two sampled packets, one observation per copy: the k-th copy k clock reads after arrival
    assert histogram.counts == [2, 2, 2, 0]
    assert histogram.count == 2 * 3
    assert receiver.layers[0].packets_received == 2 * latency.SAMPLE_EVERY
    assert all(len(sink.packets) == 2 * latency.SAMPLE_EVERY for sink in sinks)


async def test_totals_read_receivers_streams_and_rtcp_feedback() -> None:
    connection = MediaConnection(MediaConfig(), lambda reason: None, lambda: None)
    receiver = publisher_receiver(connection)
    stream = OutgoingStream(subscriber_params(), 500, 9000)
    down_track = DownTrack(receiver, stream, RecordingSink())
    receiver.add_down_track(down_track)
    connection.add_down_track(down_track)
    try:
        for seq in range(10):
            receiver.layers[0].on_rtp(vp8_packet(seq, keyframe=seq == 0), 1.0)
        connection._on_rtcp(
            rtcp.serialize(
                [
                    rtcp.Nack(sender_ssrc=9, media_ssrc=down_track.ssrc, lost=[501, 502]),
                    rtcp.Pli(sender_ssrc=9, media_ssrc=down_track.ssrc),
                ]
            )
        )
    finally:
        await connection.close()
    totals = MediaTotals()
    totals.add_receiver(receiver)
    totals.add_stream(stream)
    totals.add_connection(connection)
    assert totals.packets_received_video == 10
    assert totals.bytes_received_video == sum(len(vp8_packet(s, False)) for s in range(10))
    assert totals.packets_forwarded_video == 10
    assert totals.nacks_received == 1
    assert totals.plis_received == 1
    assert totals.retransmissions == 2  # both NACKed packets were in the history
    assert totals.packets_received_audio == totals.packets_forwarded_audio == 0


def test_totals_add_up_field_by_field() -> None:
    a = MediaTotals(packets_received_audio=1, nacks_sent=2)
    b = MediaTotals(packets_received_audio=10, plis_sent=3)
    a.add(b)
    assert a == MediaTotals(packets_received_audio=11, nacks_sent=2, plis_sent=3)
    assert a.copy() == a and a.copy() is not a


# --- the collector ---


def _scrape(service: Sfu) -> dict[str, float]:
    text = generate_latest(build_registry(service)).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_an_idle_service_exports_every_metric_at_zero_and_the_process_metrics() -> None:
    samples = _scrape(Sfu())
    for name in (
        "sfu_rooms",
        "sfu_participants",
        "sfu_participants_joined_total",
        "sfu_packets_sent_total",
        "sfu_retransmissions_total",
        "sfu_layer_switches_total",
        "sfu_nacks_received_total",
        "sfu_plis_sent_total",
        "sfu_published_tracks{kind=video}",
        "sfu_down_tracks{kind=audio}",
        "sfu_rtp_packets_received_total{kind=video}",
        "sfu_rtp_packets_forwarded_total{kind=audio}",
    ):
        assert samples[name] == 0, name
    assert samples["process_resident_memory_bytes"] > 0
    assert "process_cpu_seconds_total" in samples
    assert "sfu_forwarding_latency_seconds_bucket{le=+Inf}" in samples


def test_departed_counters_stay_in_the_totals() -> None:
    service = Sfu()
    service._departed.add(MediaTotals(packets_received_video=7, plis_sent=2))
    samples = _scrape(service)
    assert samples["sfu_rtp_packets_received_total{kind=video}"] == 7
    assert samples["sfu_plis_sent_total"] == 2


async def test_the_shared_udp_port_counts_what_it_drops_by_kind() -> None:
    service = Sfu(MediaConfig(ice_hosts=("127.0.0.1",), udp_port=0))
    assert not any(name.startswith("sfu_udp_unroutable") for name in _scrape(service))
    set_ice_host_addresses(service.config.ice_hosts)
    try:
        await service.start()
        port = bridge._udp_port
        assert port is not None
        (address,) = port.socknames
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=address
        )
        # a STUN request for nobody, RTP from an address no check authenticated, noise
        transport.sendto(bytes(Message(Method.BINDING, Class.REQUEST)))
        transport.sendto(b"\x80\x60" + bytes(30))
        transport.sendto(b"\xff" * 12)
        for _ in range(100):
            if sum(port.unroutable.values()) == 3:
                break
            await asyncio.sleep(0.01)
        transport.close()
        samples = _scrape(service)
        for kind in ("stun", "media", "other"):
            assert samples[f"sfu_udp_unroutable_total{{kind={kind}}}"] == 1, kind
    finally:
        await service.close()
        set_ice_host_addresses(())
    assert bridge._udp_port is None
    assert not any(name.startswith("sfu_udp_unroutable") for name in _scrape(service))
