"""The estimator's parts, each on hand-made input."""

from __future__ import annotations

import random

import pytest

from sfu.bwe.acked import AckedBitrate
from sfu.bwe.aimd import AimdRateControl
from sfu.bwe.alr import AlrDetector
from sfu.bwe.delay import MAX_THRESHOLD, MIN_THRESHOLD, DelayDetector
from sfu.bwe.feedback import FeedbackSummary, ProbeCluster, ProbePacket
from sfu.bwe.loss import LossBasedControl
from sfu.bwe.probe import ProbeController
from sfu.bwe.probe_result import ProbeResult, ProbeResultEstimator
from sfu.bwe.standing import StandingQueue

# -- delay-based detection: inter-group deltas, trendline, over-use detector -----------------------


def groups_with_delay_growth(count: int, growth: float) -> list[tuple[float, float, int]]:
    """Groups sent every 5 ms whose arrival spacing is 5 ms + ``growth``."""
    return [(i * 0.005, 1.0 + i * (0.005 + growth), 1200) for i in range(count)]


@pytest.mark.parametrize(
    ("extra_delay_per_group", "expected_sign"),
    [(0.0, 0), (0.001, 1), (-0.001, -1)],
    ids=["flat", "queue building", "queue draining"],
)
def test_trend_follows_the_delay_gradient(extra_delay_per_group: float, expected_sign: int) -> None:
    detector = DelayDetector()
    detector.update(groups_with_delay_growth(41, extra_delay_per_group))
    trend = detector.modified_trend
    assert (trend > 1.0) - (trend < -1.0) == expected_sign


def test_no_trend_before_the_window_fills() -> None:
    detector = DelayDetector(window=20)
    groups = groups_with_delay_growth(22, 0.005)
    detector.update(groups[:20])  # 19 deltas
    assert (detector.num_deltas, detector.modified_trend) == (19, 0.0)
    detector.update(groups[20:21])
    assert detector.modified_trend > 0.0


def test_restarting_the_trend_forgets_the_groups_but_not_the_threshold() -> None:
    detector = DelayDetector(window=20)
    groups = groups_with_delay_growth(61, 0.003)
    detector.update(groups[:40])
    assert detector.state == "overusing"
    threshold = detector.threshold
    detector.restart_trend()
    assert (detector.state, detector.modified_trend, detector.last_delta) == ("normal", 0.0, None)
    assert detector.threshold == threshold
    detector.update(groups[40:60])  # 19 deltas (the first group pairs with none): not full yet
    assert (detector.state, detector.modified_trend) == ("normal", 0.0)
    detector.update(groups[60:])
    assert detector.modified_trend > 0.0


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([(0.0, 10.0), (0.005, 10.006)], [None, (0.005, pytest.approx(0.006))]),
        # a group older than the last one is dropped, the next one pairs with the last
        ([(0.0, 10.0), (0.01, 10.01), (0.005, 10.02), (0.02, 10.02)],
         [None, (0.01, pytest.approx(0.01)), None, (pytest.approx(0.01), pytest.approx(0.01))]),
        # the arrival clock jumped by more than 3 s: no delta
        ([(0.0, 10.0), (0.005, 20.0)], [None, None]),
    ],
    ids=["consecutive", "reordered", "clock jump"],
)  # fmt: skip
def test_inter_group_deltas(groups: list[tuple[float, float]], expected: list[object]) -> None:
    detector = DelayDetector()
    deltas = []
    for send, arrival in groups:
        detector.update([(send, arrival, 1000)])
        deltas.append(detector.last_delta)
    assert deltas == expected


def test_a_message_is_its_groups_one_by_one() -> None:
    """One call per feedback message: the same verdicts as the groups given singly."""
    rng = random.Random(5)
    groups, arrival = [], 3.0
    for i in range(2000):  # a queue building, standing, draining, with jitter
        phase = (i // 250) % 4
        arrival += 0.005 + (0.0015, 0.0, -0.001, 0.0)[phase] + rng.gauss(0, 0.0005)
        groups.append((i * 0.005, arrival, 1200))
    whole, single = DelayDetector(), DelayDetector()
    states = []
    for at in range(0, len(groups), 10):
        state = whole.update(groups[at : at + 10])
        for group in groups[at : at + 10]:
            single.update([group])
        assert (state, whole.threshold) == (single.state, single.threshold)
        states.append(state)
    assert {"normal", "overusing", "underusing"} <= set(states)


@pytest.mark.parametrize(
    ("trends", "expected"),
    [
        ([0.0] * 5, "normal"),
        ([30.0], "normal"),  # one group over the threshold: not yet
        ([30.0, 31.0, 32.0, 33.0], "overusing"),  # persisted over 10 ms and 2 groups, rising
        ([30.0, 29.0, 28.0, 27.0], "normal"),  # over the threshold but falling: no signal
        ([-30.0], "underusing"),
        ([30.0, 31.0, 32.0, 33.0, 0.0], "normal"),
    ],
    ids=["flat", "one group", "persisting", "falling", "draining", "recovered"],
)
def test_overuse_detector(trends: list[float], expected: str) -> None:
    detector = DelayDetector()
    state = "normal"
    for i, trend in enumerate(trends):
        state = detector.detect(trend, 0.005, 60, i * 0.005)
    assert state == expected


def test_threshold_adapts_up_fast_down_slowly_within_bounds() -> None:
    detector = DelayDetector()
    start = detector.threshold
    for i in range(10):  # just above the threshold: not an outlier, it follows quickly
        detector.detect(detector.threshold + 10, 0.1, 60, i * 0.1)
    up = detector.threshold - start
    assert up > 10
    for i in range(10, 20):
        detector.detect(0.0, 0.1, 60, i * 0.1)
    assert 0 < start + up - detector.threshold < up / 5
    for i in range(20, 2000):
        detector.detect(0.0, 0.1, 60, i * 0.1)
    assert detector.threshold == MIN_THRESHOLD
    for i in range(2000, 10000):
        detector.detect(detector.threshold + 14, 0.1, 60, i * 0.1)
    assert detector.threshold == MAX_THRESHOLD


def test_outliers_do_not_move_the_threshold() -> None:
    detector = DelayDetector()
    start = detector.threshold
    detector.detect(start + 100, 0.1, 60, 0.0)
    detector.detect(start + 100, 0.1, 60, 0.1)
    assert detector.threshold == start


@pytest.mark.parametrize(
    "bad",
    [[(0.0,)], [None], [("a", 1.0, 1)], 5],
    ids=["short group", "not a tuple", "not a number", "not a sequence"],
)
def test_malformed_groups_raise_type_errors(bad: object) -> None:
    detector = DelayDetector()
    with pytest.raises(TypeError):
        detector.update(bad)  # type: ignore[arg-type]
    assert detector.update([(0.0, 1.0, 1), (0.005, 1.005, 1)]) == "normal"


# -- AIMD -----------------------------------------------------------------------------------------


def aimd(rate: float = 1e6) -> AimdRateControl:
    return AimdRateControl(rate, min_bitrate=50e3, max_bitrate=20e6)


def test_overuse_decreases_to_beta_times_acknowledged() -> None:
    control = aimd(2e6)
    assert control.update("overusing", 1e6, 1.0, 0.05) == pytest.approx(0.85e6)
    assert control.state == "hold"


def test_far_from_convergence_grows_about_8_percent_per_second() -> None:
    control = aimd(1e6)
    control.update("normal", None, 0.0, 0.05)
    for i in range(1, 11):
        control.update("normal", None, i * 0.1, 0.05)
    assert control.estimate == pytest.approx(1.08e6, rel=0.005)


def test_near_convergence_grows_additively() -> None:
    control = aimd(6e6)
    control.update("overusing", 5e6, 0.0, 0.05)  # the link showed its capacity: ~5 Mbit/s
    start = control.estimate
    for i in range(1, 11):
        control.update("normal", 5e6, i * 0.1, 0.05)
    assert 0 < control.estimate - start < 0.02 * start


def test_increase_capped_by_acknowledged_rate() -> None:
    control = aimd(300e3)
    control.update("normal", 300e3, 0.0, 0.05)
    for i in range(1, 200):
        control.update("normal", 300e3, i * 0.1, 0.05)
    assert control.estimate == pytest.approx(1.5 * 300e3 + 10e3)


def test_underuse_holds() -> None:
    control = aimd(1e6)
    control.update("normal", None, 0.0, 0.05)
    assert control.update("underusing", None, 1.0, 0.05) == pytest.approx(1e6)


# -- loss-based -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lost_per_100", "expected_ratio"),
    [(0, 1.08), (1, 1.08), (5, 1.0), (9, 1.0), (20, 0.9), (50, 0.75)],
)
def test_loss_bands(lost_per_100: int, expected_ratio: float) -> None:
    loss = LossBasedControl(1e6, min_bitrate=50e3, max_bitrate=20e6)
    loss.note_target(1e6, 0.0)
    loss.on_report(100 - lost_per_100, lost_per_100, 0.6)
    rate = loss.update(0.6, 0.05, 1e6)
    assert rate == pytest.approx(expected_ratio * 1e6, rel=0.002)


@pytest.mark.parametrize(
    ("lost_per_100", "acked", "expected"),
    [
        (30, None, 0.85 * 8e6),  # nothing acknowledged yet: from the target
        (30, 12e6, 0.85 * 8e6),  # sent more than the target (12 / 0.7 = 17 M): from the target
        (30, 0.84e6, 0.85 * 1.2e6),  # sent 1.2 M of an 8 M estimate: from what was sent
        (15, 1.02e6, 0.925 * 8e6),  # 15 %: from the target, whatever was sent
    ],
    ids=["unknown", "sending above the target", "sending below the target", "under 20 %"],
)
def test_severe_loss_decreases_from_the_rate_sent(
    lost_per_100: int, acked: float | None, expected: float
) -> None:
    """draft-ietf-rmcat-gcc-02 §6 decreases the sending rate A_s: an SFU that forwards 1.2 Mbit/s
    under an 8 Mbit/s estimate (probed earlier) must not cut 10 % of 8 M when a link drops."""
    loss = LossBasedControl(8e6, min_bitrate=50e3, max_bitrate=20e6)
    loss.on_report(100 - lost_per_100, lost_per_100, 0.6)
    assert loss.update(0.6, 0.05, 8e6, acked) == pytest.approx(expected)


def test_one_lossy_message_in_a_window_does_not_decrease() -> None:
    loss = LossBasedControl(1e6, min_bitrate=50e3, max_bitrate=20e6)
    for i in range(5):
        loss.on_report(30, 0, i * 0.1)
    loss.on_report(24, 6, 0.5)  # 20 % in this message, 4 % over the window
    assert loss.loss_fraction == pytest.approx(6 / 180)
    assert loss.update(0.5, 0.05, 1e6) == 1e6


def test_too_few_packets_decide_nothing() -> None:
    loss = LossBasedControl(1e6, min_bitrate=50e3, max_bitrate=20e6)
    loss.on_report(5, 5, 1.0)
    assert loss.loss_fraction is None
    assert loss.update(1.0, 0.05, 1e6) == 1e6


def test_decrease_at_most_once_per_interval_and_counts_afresh() -> None:
    loss = LossBasedControl(1e6, min_bitrate=50e3, max_bitrate=20e6)
    loss.on_report(50, 50, 1.0)
    first = loss.update(1.0, 0.1, 1e6)
    assert first == pytest.approx(0.75e6)
    assert loss.loss_fraction is None  # the lost packets were counted once
    loss.on_report(50, 50, 1.2)
    assert loss.update(1.2, 0.1, first) == first  # within 300 ms + RTT
    loss.on_report(50, 50, 1.45)
    assert loss.update(1.45, 0.1, first) == pytest.approx(0.75 * first)


def test_reports_of_packets_sent_before_a_decrease_are_ignored() -> None:
    loss = LossBasedControl(1e6, min_bitrate=50e3, max_bitrate=20e6)
    loss.on_report(50, 50, 1.0, current=False)
    assert loss.loss_fraction is None


# -- acknowledged bitrate -------------------------------------------------------------------------


def summary(first: float, last: float, size: int) -> FeedbackSummary:
    return FeedbackSummary(received=10, received_bytes=size, first_arrival=first, last_arrival=last)


def test_acked_rate_over_contiguous_messages() -> None:
    acked = AckedBitrate()
    assert acked.bitrate is None
    for i in range(10):  # 12500 bytes per 100 ms: 1 Mbit/s
        acked.on_feedback(summary(100 + i * 0.1 + 0.01, 100 + (i + 1) * 0.1, 12500))
    assert acked.bitrate == pytest.approx(1e6, rel=0.01)


def test_acked_rate_after_a_lost_message_is_not_diluted() -> None:
    acked = AckedBitrate()
    for i in (0, 1, 2, 4, 5, 6):  # message 3 lost
        acked.on_feedback(summary(100 + i * 0.1 + 0.01, 100 + (i + 1) * 0.1, 12500))
    assert acked.bitrate == pytest.approx(1e6, rel=0.05)


def test_acked_rate_restarts_when_the_clock_goes_back() -> None:
    acked = AckedBitrate()
    for i in range(5):
        acked.on_feedback(summary(100 + i * 0.1 + 0.01, 100 + (i + 1) * 0.1, 50000))
    for i in range(3):
        acked.on_feedback(summary(i * 0.1 + 0.01, (i + 1) * 0.1, 6250))
    assert acked.bitrate == pytest.approx(0.5e6, rel=0.01)


# -- ALR ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        ([1e6] * 8, False),
        ([300e3], False),  # not long enough
        ([300e3] * 4, True),
        ([300e3] * 4 + [700e3], True),  # between the start and stop ratios: stays
        ([300e3] * 4 + [900e3], False),
    ],
    ids=["using it", "briefly low", "application-limited", "still", "back"],
)
def test_alr(rates: list[float], expected: bool) -> None:
    alr = AlrDetector()
    total = 0
    alr.on_sent(total, 0.0, 1e6)
    for i, rate in enumerate(rates, 1):
        total += int(rate * 0.25 / 8)
        alr.on_sent(total, i * 0.25, 1e6)
    assert alr.in_alr is expected


# -- probes ---------------------------------------------------------------------------------------


def probe_packets(
    cluster: int, count: int, send_rate: float, receive_rate: float, size: int = 1000
) -> list[ProbePacket]:
    return [
        ProbePacket(cluster, i * size * 8 / send_rate, 50 + i * size * 8 / receive_rate, size)
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("count", "receive_rate", "expected"),
    [
        (14, 2e6, (2e6, False)),
        (14, 1e6, (1e6, True)),
        (14, 1.9e6, (1.9e6, False)),  # within 90 % of the send rate: not saturated
        (3, 2e6, None),  # under 80 % of min_packets
        (9, 2e6, None),  # under 80 % of the bytes (2 Mbit/s x 50 ms = 12.5 kB)
        (14, 5e6, None),  # arrived faster than twice the send rate: queued behind others
    ],
    ids=["fits", "saturated", "nearly", "too few", "too few bytes", "invalid"],
)
def test_probe_result(count: int, receive_rate: float, expected: tuple[float, bool] | None) -> None:
    results = ProbeResultEstimator()
    results.expect(ProbeCluster(1, 2e6, 0.05, 5))
    found = results.on_packets(probe_packets(1, count, 2e6, receive_rate), newest_send=1.0)
    if expected is None:
        assert found == []
    else:
        assert [(r.cluster, r.saturated) for r in found] == [(1, expected[1])]
        assert found[0].bitrate == pytest.approx(expected[0])


def test_probe_packets_of_unknown_clusters_are_ignored() -> None:
    assert ProbeResultEstimator().on_packets(probe_packets(7, 14, 2e6, 2e6), 1.0) == []


def test_probe_measured_once_when_complete() -> None:
    results = ProbeResultEstimator()
    results.expect(ProbeCluster(1, 2e6, 0.05, 5))
    packets = probe_packets(1, 14, 2e6, 2e6)  # 1000 bytes every 4 ms: 52 ms
    assert results.on_packets(packets[:5], newest_send=0.02) == []  # still running
    assert len(results.on_packets(packets[5:], newest_send=0.05)) == 1
    assert results.on_packets([], newest_send=0.5) == []  # reported once


def test_initial_then_exponential_probing() -> None:
    probes = ProbeController(max_bitrate=20e6)
    probes.start(1e6, 0.0)
    first, second = probes.next(0.0), probes.next(0.0)
    assert first is not None and second is not None
    assert (first.bitrate, second.bitrate, probes.next(0.0)) == (3e6, 6e6, None)
    probes.on_result(ProbeResult(first.cluster, 3e6, False), 0.2)
    probes.on_result(ProbeResult(second.cluster, 5e6, False), 0.2)  # >= 70 % of 6M: further
    further = probes.next(0.2)
    assert further is not None and further.bitrate == 10e6
    probes.on_result(ProbeResult(further.cluster, 6e6, True), 0.4)  # saturated: done
    assert probes.next(0.4) is None and not probes.probing(0.4)


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        ([(0.0, 2e6)], [True]),
        ([(0.0, 0.5e6)], [False]),  # fits already
        ([(0.0, 2e6), (1.5, 2e6)], [True, False]),  # same level within 2.5 s
        ([(0.0, 2e6), (3.0, 2e6)], [True, True]),
        ([(0.0, 2e6), (1.5, 4e6)], [True, True]),  # another level
    ],
)
def test_requested_probes_rate_limited_per_level(
    requests: list[tuple[float, float]], expected: list[bool]
) -> None:
    probes = ProbeController(max_bitrate=20e6, initial_probing=False)
    probes.start(1e6, 0.0)
    got = []
    for now, rate in requests:
        got.append(probes.request(rate, 1e6, now, allowed=True))
        cluster = probes.next(now)
        if cluster is not None:
            assert cluster.bitrate == pytest.approx(1.15 * rate)
            probes.on_result(ProbeResult(cluster.cluster, rate, False), now + 0.1)
    assert got == expected


def test_no_requested_probe_while_not_allowed() -> None:
    probes = ProbeController(max_bitrate=20e6, initial_probing=False)
    assert not probes.request(2e6, 1e6, 0.0, allowed=False)
    assert probes.next(0.0) is None


def test_alr_probes_every_interval() -> None:
    probes = ProbeController(max_bitrate=20e6, initial_probing=False, alr_interval=5.0)
    probes.start(1e6, 0.0)
    sent = []
    for i in range(0, 45):
        now = i * 0.25
        probes.on_tick(1e6, now, in_alr=True, allowed=True)
        cluster = probes.next(now)
        if cluster is not None:
            sent.append((now, cluster.bitrate))
            probes.on_result(ProbeResult(cluster.cluster, 1e6, True), now + 0.1)
    assert sent == [(0.0, 2e6), (5.0, 2e6), (10.0, 2e6)]


# -- standing queue and jitter (sfu.bwe.standing) -------------------------------------------------


def lowest_delays(queue_after_3s: float, jitter: float, seed: int = 3) -> list[float]:
    """Per 50 ms message for 6 s: the lowest one-way delay (a 5 ms base, the clocks' offset in
    it), with ``jitter`` of spread around the floor from message to message."""
    rng = random.Random(seed)
    return [
        7.005 + rng.uniform(0, jitter) + (queue_after_3s if i * 0.05 > 3 else 0.0)
        for i in range(120)
    ]


@pytest.mark.parametrize(
    ("queue_after_3s", "jitter", "expected"),
    [
        (0.0, 0.005, False),
        (0.015, 0.005, False),  # under the limit
        (0.1, 0.005, True),  # a full drop-tail queue: every message's packets waited alike
        (0.1, 0.06, True),  # over the limit plus the jitter
        # in-order jitter raises the floor with the packet rate; the level varies by as much
        (0.04, 0.06, False),
    ],
)
def test_standing_queue(queue_after_3s: float, jitter: float, expected: bool) -> None:
    queue = StandingQueue()
    for i, delay in enumerate(lowest_delays(queue_after_3s, jitter)):
        queue.update(delay, i * 0.05)
    assert queue.standing(0.025) is expected


def test_the_jitter_is_the_spread_of_the_messages_floors() -> None:
    queue = StandingQueue()
    for i, delay in enumerate(lowest_delays(0.0, 0.06)):
        queue.update(delay, i * 0.05)
    assert 0.04 < queue.jitter < 0.06
    queue.update(None, 6.0)  # nothing arrived: no news
    assert 0.04 < queue.jitter < 0.06


def test_draining_queue_is_not_standing() -> None:
    queue = StandingQueue()
    for i in range(120):
        t = i * 0.05
        level = 0.3 if t < 3 else max(0.3 - (t - 3) * 0.05, 0.0)  # full, then draining
        queue.update(7.0 + (level if t >= 1 else 0.0), t)
    assert not queue.standing(0.025)


def test_a_new_clock_starts_the_standing_queue_over() -> None:
    queue = StandingQueue()
    for i in range(120):
        queue.update(7.0 if i < 60 else 20.0, i * 0.05)  # the subscriber restarted its clock
    assert not queue.standing(0.025)
    assert queue.jitter == 0.0


def held_and_released(queue_growth: float) -> list[tuple[float, float, int]]:
    """Groups sent every 5 ms over 1 s; three of every four were held behind a late packet, longer
    and longer (up to 60 ms), the fourth was not; a queue adds ``queue_growth`` s per second
    to every group's delay."""
    groups = []
    for i in range(200):
        send = i * 0.005
        held = 0.0 if i % 4 == 0 else (i % 40) / 40 * 0.06
        groups.append((send, 3.0 + send + held + queue_growth * send, 1200))
    return groups


def states_of(detector: DelayDetector, groups: list[tuple[float, float, int]]) -> set[str]:
    return {detector.update(groups[i : i + 10]) for i in range(0, len(groups), 10)}


def test_delays_rising_above_a_floor_that_stays_are_no_overuse() -> None:
    """Jitter that keeps the order: the held groups' delays rise and fall, the others' floor
    stays. The floor's slope caps the trend."""
    assert "overusing" not in states_of(DelayDetector(), held_and_released(0.0))


def test_without_the_floor_cap_they_read_as_overuse() -> None:
    """libwebrtc's default (no cap): the same groups are over-use."""
    assert "overusing" in states_of(DelayDetector(cap_groups=0), held_and_released(0.0))


def test_a_queue_under_such_jitter_is_still_overuse() -> None:
    """A queue raises the floor with it: the cap lets the trend through."""
    assert "overusing" in states_of(DelayDetector(), held_and_released(0.1))
