"""The userspace impairment's pure parts (``benchmarks/impair.py``): the spec syntax, the
schedule of each frame with an injected clock (``admit``'s ``now``) and random source, and the
forwarding loop over a datagram socketpair (no namespace, no root)."""

from __future__ import annotations

import random
import socket
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

from benchmarks.impair import (
    Bridge,
    Counters,
    Impairment,
    Schedule,
    counters_json,
    parse_impairment,
    read_counters,
)

MS = 0.001


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", Impairment()),
        ("none", Impairment()),
        ("loss=5%", Impairment(loss=0.05)),
        ("loss=0.05", Impairment(loss=0.05)),
        ("loss=100%", Impairment(loss=1.0)),
        ("delay=50ms,jitter=50ms", Impairment(delay=0.05, jitter=0.05)),
        ("delay=0.2,jitter=500us", Impairment(delay=0.2, jitter=0.0005)),
        ("jitter=10ms,dist=normal,reorder",
         Impairment(jitter=0.01, distribution="normal", reorder=True)),
        ("rate=2mbit,queue=150ms", Impairment(rate=2_000_000, queue=0.15)),
        ("rate=400kbit", Impairment(rate=400_000)),
        (" loss=1% , rate=64000 ", Impairment(loss=0.01, rate=64_000)),
    ],
)  # fmt: skip
def test_a_spec_reads_as_the_impairment(spec: str, expected: Impairment) -> None:
    assert parse_impairment(spec) == expected
    assert parse_impairment(expected.describe()) == expected  # describe() reads back


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("loss=150%", "loss must be within 0..100 %"),
        ("loss=-1", "loss must be within 0..100 %"),
        ("loss=lots", "cannot read 'loss=lots'"),
        ("delay=fast", "cannot read 'delay=fast'"),
        ("dist=pareto", "cannot read 'dist=pareto'"),
        ("rate=0", "rate must be > 0"),
        ("queue=0ms", "queue > 0"),
        ("colour=blue", "cannot read 'colour=blue'"),
    ],
)
def test_a_bad_spec_says_what_it_could_not_read(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_impairment(spec)
    assert "ValueError" not in str(raised.value)


class Scripted:
    """A random source that returns what the test says: ``random()`` from ``draws``, the jitter
    term (uniform or normal) from ``offsets``."""

    def __init__(self, draws: Sequence[float] = (), offsets: Sequence[float] = ()) -> None:
        self._draws: Iterator[float] = iter(draws)
        self._offsets: Iterator[float] = iter(offsets)

    def random(self) -> float:
        return next(self._draws)

    def uniform(self, a: float, b: float) -> float:
        value = next(self._offsets)
        assert a <= value <= b
        return value

    def gauss(self, mu: float, sigma: float) -> float:
        return mu + next(self._offsets)


@dataclass(frozen=True)
class Case:
    impairment: Impairment
    arrivals: Sequence[tuple[float, int]]  # (now, size)
    expected: Sequence[float | None]  # departure, None: dropped
    draws: Sequence[float] = ()
    offsets: Sequence[float] = ()


CASES = {
    "nothing: at once": Case(Impairment(), [(0.0, 100), (0.5, 100)], [0.0, 0.5]),
    "loss: a draw under the fraction drops": Case(
        Impairment(loss=0.05), [(0.0, 100)] * 4, [None, 0.0, None, 0.0],
        draws=[0.01, 0.5, 0.049, 0.05],
    ),
    "delay": Case(Impairment(delay=50 * MS), [(0.0, 100), (0.01, 100)], [0.05, 0.06]),
    "uniform jitter about the delay": Case(
        Impairment(delay=50 * MS, jitter=50 * MS), [(0.0, 100), (0.2, 100)], [0.09, 0.21],
        offsets=[0.04, -0.04],
    ),
    "no reordering: a frame waits for the one ahead": Case(
        Impairment(delay=50 * MS, jitter=50 * MS), [(0.0, 100), (0.01, 100), (0.02, 100)],
        [0.1, 0.1, 0.1], offsets=[0.05, -0.05, 0.03],
    ),
    "reorder: a frame may overtake": Case(
        Impairment(delay=50 * MS, jitter=50 * MS, reorder=True),
        [(0.0, 100), (0.01, 100)], [0.1, 0.01], offsets=[0.05, -0.05],
    ),
    "never before it arrived": Case(
        Impairment(delay=10 * MS, jitter=50 * MS, reorder=True), [(1.0, 100)], [1.0],
        offsets=[-0.05],
    ),
    "normal jitter": Case(
        Impairment(delay=50 * MS, jitter=20 * MS, distribution="normal"), [(0.0, 100)],
        [0.08], offsets=[0.03],
    ),
    "rate: one after another, tail drop past the queue": Case(
        # 1250 bytes at 1 Mbit/s take 10 ms; the 4th would wait 30 ms > 25
        Impairment(rate=1_000_000, queue=25 * MS), [(0.0, 1250)] * 4 + [(0.05, 1250)],
        [0.01, 0.02, 0.03, None, 0.06],
    ),
    "rate then delay": Case(
        Impairment(rate=1_000_000, delay=50 * MS), [(0.0, 1250), (0.0, 1250)], [0.06, 0.07],
    ),
    "loss drawn before the queue: a lost frame takes no room": Case(
        Impairment(loss=0.5, rate=1_000_000, queue=15 * MS), [(0.0, 1250)] * 3,
        [0.01, None, 0.02], draws=[0.9, 0.1, 0.9],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_frame_leaves_when_the_impairment_says(case: Case) -> None:
    schedule = Schedule(case.impairment, Scripted(case.draws, case.offsets))
    departures = [schedule.admit(now, size) for now, size in case.arrivals]
    assert departures == pytest.approx(case.expected)
    counters = schedule.counters
    assert counters.received == len(case.arrivals)
    assert counters.lost + counters.overflowed == case.expected.count(None)


def _departures(
    impairment: Impairment, count: int = 20_000, spacing: float = 2 * MS
) -> list[float | None]:
    schedule = Schedule(impairment, random.Random(7))
    return [schedule.admit(i * spacing, 1200) for i in range(count)]


@pytest.mark.parametrize(
    ("impairment", "mean", "stdev", "low", "high"),
    [
        # uniform in [delay - j, delay + j]: mean delay, stdev j / sqrt(3)
        (Impairment(delay=50 * MS, jitter=50 * MS, reorder=True), 0.050, 0.050 / 3**0.5, 0.0, 0.1),
        (Impairment(delay=100 * MS, jitter=20 * MS, distribution="normal", reorder=True),
         0.100, 0.020, 0.0, 1.0),
        (Impairment(delay=30 * MS), 0.030, 0.0, 0.030, 0.030),
    ],
)  # fmt: skip
def test_the_delay_follows_its_distribution(
    impairment: Impairment, mean: float, stdev: float, low: float, high: float
) -> None:
    departures = _departures(impairment)
    delays = [d - i * 2 * MS for i, d in enumerate(departures) if d is not None]
    assert statistics.fmean(delays) == pytest.approx(mean, abs=2 * MS)
    assert statistics.pstdev(delays) == pytest.approx(stdev, abs=2 * MS)
    assert low - 1e-9 <= min(delays) and max(delays) <= high + 1e-9


def test_without_reordering_frames_leave_in_order_later_than_with_it() -> None:
    jittery = Impairment(delay=50 * MS, jitter=50 * MS)
    in_order = [d for d in _departures(jittery) if d is not None]
    assert in_order == sorted(in_order)
    shuffled = _departures(Impairment(delay=50 * MS, jitter=50 * MS, reorder=True))
    assert shuffled != sorted(d for d in shuffled if d is not None)
    # holding a frame behind a later one only ever delays it: the mean moves up, not down
    mean = statistics.fmean(d - i * 2 * MS for i, d in enumerate(in_order))
    assert 0.05 < mean <= 0.1


@pytest.mark.parametrize(("loss", "seed"), [(0.05, 1), (0.05, 2), (0.2, 3), (0.0, 4), (1.0, 5)])
def test_the_loss_fraction_is_the_one_asked(loss: float, seed: int) -> None:
    schedule = Schedule(Impairment(loss=loss), random.Random(seed))
    count = 40_000
    kept = sum(schedule.admit(0.0, 100) is not None for _ in range(count))
    assert schedule.counters.lost == count - kept
    # binomial: 4 standard deviations either side
    margin = 4 * (loss * (1 - loss) / count) ** 0.5
    assert schedule.counters.lost / count == pytest.approx(loss, abs=margin + 1e-12)


def test_the_same_seed_draws_the_same_losses() -> None:
    runs = [_departures(Impairment(loss=0.05, jitter=10 * MS), 2000) for _ in range(2)]
    assert runs[0] == runs[1]


def test_counters_read_back_from_the_stats_json() -> None:
    lossy = Schedule(Impairment(loss=0.5), Scripted([0.1, 0.9]))
    for now in (0.0, 1.0):
        departure = lossy.admit(now, 100)
        if departure is not None:
            lossy.sent(now, departure, departure + 0.01, 100, ok=True)
    counters = read_counters(counters_json((lossy, Schedule(Impairment(), Scripted())), held=0))
    forward = counters["forward"]
    assert (forward.received, forward.forwarded, forward.lost, forward.delayed) == (2, 1, 1, 1)
    assert forward.bytes_forwarded == 100
    assert forward.delay_total == forward.delay_max == forward.late_max == pytest.approx(0.01)
    assert counters["backward"] == Counters()


# --- the loop, over a socketpair ---


def _ethernet(index: int, ethertype: bytes = b"\x08\x00") -> bytes:
    return bytes(12) + ethertype + index.to_bytes(4, "big") + bytes(40)


def test_the_bridge_forwards_both_ways_delayed_in_order_and_passes_arp() -> None:
    left_outer, left_inner = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    right_inner, right_outer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sockets = (left_outer, left_inner, right_inner, right_outer)
    for sock in sockets:
        sock.setblocking(False)
    delay = 30 * MS
    forward = Schedule(Impairment(delay=delay, jitter=20 * MS), random.Random(1))
    backward = Schedule(Impairment(loss=0.5), random.Random(2))
    bridge = Bridge((left_inner, right_inner), (forward, backward))
    try:
        sent_at = time.monotonic()
        for index in range(20):
            left_outer.send(_ethernet(index))
            right_outer.send(_ethernet(index))
        left_outer.send(_ethernet(99, b"\x08\x06"))  # ARP: at once, not counted as received
        arrived: dict[socket.socket, list[tuple[float, int]]] = {left_outer: [], right_outer: []}
        deadline = sent_at + 2.0
        while (bridge.held or len(arrived[right_outer]) < 21) and time.monotonic() < deadline:
            bridge.step(0.01)
            for sock in arrived:
                while True:
                    try:
                        frame = sock.recv(100)
                    except BlockingIOError:
                        break
                    arrived[sock].append((time.monotonic(), int.from_bytes(frame[14:18], "big")))
    finally:
        bridge.close()
        for sock in sockets:
            sock.close()
    forwarded = arrived[right_outer]
    assert forwarded[0][1] == 99  # ARP first: nothing held it
    assert [i for _, i in forwarded[1:]] == list(range(20))  # every frame, in order
    assert all(at - sent_at >= delay - 20 * MS for at, _ in forwarded[1:])
    assert forward.counters.received == 20 and forward.counters.passed == 1
    assert forward.counters.forwarded == 20 and forward.counters.delayed > 0
    back = [i for _, i in arrived[left_outer]]
    assert back == sorted(back) and len(back) == backward.counters.forwarded
    assert backward.counters.lost == 20 - len(back) > 0
