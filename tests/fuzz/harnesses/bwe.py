"""A hostile subscriber's feedback against the send-side estimator: transport-cc feedback
(matched by the C egress, sfu/media/_transport_cc.c), REMB and RTT from RTCP, driving
sfu.media.bandwidth.SubscriberBandwidth (sfu/bwe: draft-ietf-rmcat-gcc-02). Whatever the
subscriber claims, nothing raises and the estimate, pacing rate and budget stay finite numbers
within the estimator's bounds."""

from __future__ import annotations

import math

from sfu.bwe.feedback import FeedbackSummary
from sfu.media.bandwidth import SubscriberBandwidth
from sfu.rtp.twcc import encode
from tests.fuzz.harnesses.egress import relayed
from tests.fuzz.reader import Reader

MAX_BITRATE = 50_000_000


def _fci(reader: Reader, last_sent: int) -> bytes:
    """Feedback about recently sent numbers with arrivals the input chooses, or raw bytes."""
    if reader.uint() < 32:
        return reader.sized()
    base = (last_sent - reader.below(600)) & 0xFFFF
    arrivals: list[int | None] = []
    now = reader.uint(3)
    for _ in range(1 + reader.below(120)):
        step = reader.uint()
        if step == 0:
            arrivals.append(None)
            continue
        now += step - 64 if step > 200 else step
        arrivals.append(now)
    if all(t is None for t in arrivals):
        arrivals[0] = now
    try:
        return encode(base, reader.uint(), arrivals)
    except ValueError:  # a delta past 16 bits
        return reader.sized()


def _check(bandwidth: SubscriberBandwidth, now: float) -> None:
    estimator = bandwidth.estimator
    target = estimator.target
    assert math.isfinite(target) and 0 < target <= MAX_BITRATE, target
    stats = bandwidth.stats()
    for value in (stats.estimate, stats.delay_based, stats.loss_based, stats.acked_bitrate):
        assert value is None or math.isfinite(value), stats
    assert 0 <= stats.loss_fraction <= 1 and math.isfinite(stats.rtt), stats
    rate = bandwidth.pacing_rate(now)
    assert 0 <= rate <= 2 * MAX_BITRATE, rate
    budget = bandwidth.current_budget()
    assert budget is None or (math.isfinite(budget) and budget >= 0), budget


def run(data: bytes) -> None:
    reader = Reader(data)
    box = relayed()
    box.numbered(200 + reader.below(400))  # this message's packets, on the real clock
    egress = box.egress
    bandwidth = SubscriberBandwidth(max_bitrate=MAX_BITRATE)
    bandwidth.negotiated = True
    now = 1000.0
    sent = 0
    while reader.more():
        op = reader.uint()
        now += reader.uint() / 100
        if op < 160:
            raw = egress.transport_feedback(_fci(reader, (egress.transport_cc_sent - 1) & 0xFFFF))
            if raw is not None:
                bandwidth.on_feedback(FeedbackSummary.from_egress(raw), now)
        elif op < 180:
            bandwidth.on_remb(reader.uint(2) << reader.below(64), now)
        elif op < 200:
            bandwidth.on_rtt(reader.uint(4) / 1000, now)
        elif op < 230:
            sent += reader.uint(2)
            bandwidth.budget(now, sent, [(reader.uint(2), reader.uint())])
        elif op < 250:
            probe = bandwidth.probe(reader.uint(4) if reader.flag() else None, now)
            assert probe is None or (math.isfinite(probe.bitrate) and probe.bitrate > 0), probe
        else:
            bandwidth.quality(reader.uint(2) / 1000 if reader.flag() else None, 1e6, False, False)
        _check(bandwidth, now)


def seeds() -> list[bytes]:
    steady = bytes([0, 100, 40, 0, 0, 0, 0, 0] + [4] * 60)
    return [b"\x05" + steady * 5, b"\x09" + bytes(range(256)) * 2, b"\x00" + b"\xa0\x10" * 40]
