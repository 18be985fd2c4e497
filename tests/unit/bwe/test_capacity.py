"""The capacity-drop rule (sfu.bwe.capacity), message by message.

Each case feeds a second of unqueued messages (the base one-way delay), then its own messages
50 ms apart: (queue the packets waited at least, bit/s their arrivals were spaced at, packets),
and states what the last one yields against a target.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sfu.bwe.capacity import BUSY_QUEUE, CapacityDrop
from sfu.bwe.feedback import FeedbackSummary

OFFSET = 1234.5  # the clocks' offset in every one-way delay: only changes count
INTERVAL = 0.05
TARGET = 10e6
SIZE = 1000  # octets per packet


@dataclass(frozen=True)
class Case:
    name: str
    #: (queue s, delivered bit/s, packets received) per message; None: nothing arrived
    messages: list[tuple[float, float, int] | None]
    expected: float | None  # the rate the last message yields, None for none
    target: float = TARGET
    jitter: float = 0.0  # the path's, as sfu.bwe.standing measures it


def message(t: float, queue: float, rate: float, packets: int) -> FeedbackSummary:
    """``packets`` arriving by ``t``, spaced as at ``rate``, the first of them after ``queue``."""
    span = (packets - 1) * SIZE * 8 / rate
    return FeedbackSummary(
        received=packets,
        received_bytes=packets * SIZE,
        first_arrival=t - span,
        last_arrival=t,
        min_delay=OFFSET + queue,
        first_size=SIZE,
    )


def feed(
    detector: CapacityDrop,
    messages: list[tuple[float, float, int] | None],
    target: float = TARGET,
    jitter: float = 0.0,
) -> list[float | None]:
    t = 0.0
    results = []
    for _ in range(20):  # the base: an idle link
        t += INTERVAL
        results.append(detector.update(message(t, 0.0, 1e6, 2), TARGET, t))
    assert results == [None] * 20
    results = []
    for m in messages:
        t += INTERVAL
        summary = FeedbackSummary() if m is None else message(t, *m)
        results.append(detector.update(summary, target, t, jitter=jitter))
    return results


CASES = [
    Case("a step to 400 kbit/s: two busy messages measure it", [(0.07, 400e3, 2)] * 2, 400e3),
    Case("one busy message is not enough", [(0.07, 400e3, 2)], None),
    Case("a keyframe into a link at the estimate delivers the estimate", [(0.1, 9e6, 8)] * 3, None),
    Case("just over DROP_RATIO of the target: no fall", [(0.1, 7.5e6, 8)] * 3, None),
    Case("an estimate a probe lifted 1.7x above the link", [(0.1, 6e6, 8)] * 2, 6e6, 10.2e6),
    Case("no queue: an application-limited sender", [(0.0, 300e3, 2)] * 4, None),
    Case("a queue under BUSY_QUEUE", [(BUSY_QUEUE * 0.8, 300e3, 2)] * 4, None),
    Case("a queue shorter than the packet spacing may have idled", [(0.04, 150e3, 2)] * 4, None),
    Case("a single packet has no span", [(0.07, 400e3, 1)] * 2, None),
    Case(
        "a receiver that stalled, then read its queue back to back",
        [(0.15, 50e6, 10)] * 3,
        None,
    ),
    Case(
        "an idle message between busy ones starts the run over",
        [(0.07, 400e3, 2), (0.0, 400e3, 2), (0.07, 400e3, 2)],
        None,
    ),
    Case(
        "a message with no arrivals does not break the run",
        [(0.07, 400e3, 2), None, (0.07, 400e3, 2)],
        400e3,
    ),
    Case("the subscriber's clock jumped 10 s: a new base", [(10.0, 400e3, 2)] * 3, None),
    Case(
        # in order, 50 +- 50 ms: the packets behind a late one waited, and arrived in bunches
        "a jittery path: packets held and released in bunches are no busy queue",
        [(0.07, 400e3, 2)] * 3,
        None,
        jitter=0.05,
    ),
    Case(
        "a jittery path: a queue above the busy queue plus the jitter is one",
        [(BUSY_QUEUE + 0.05 + 0.01, 400e3, 2)] * 2,
        400e3,
        jitter=0.05,
    ),
    Case(
        "the run measures over both messages' spans",
        [(0.07, 300e3, 2), (0.09, 500e3, 3)],
        3 * SIZE * 8 / (SIZE * 8 / 300e3 + 2 * SIZE * 8 / 500e3),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_capacity_drop(case: Case) -> None:
    results = feed(CapacityDrop(), case.messages, case.target, case.jitter)
    assert all(r is None for r in results[:-1])
    if case.expected is None:
        assert results[-1] is None
    else:
        assert results[-1] == pytest.approx(case.expected, rel=0.01)


def test_after_a_fall_the_run_starts_over() -> None:
    detector = CapacityDrop()
    results = feed(detector, [(0.07, 400e3, 2)] * 3)
    assert results[1] == pytest.approx(400e3, rel=0.01)
    assert results[2] is None  # a third busy message alone is no new measurement


def test_the_queue_is_reported_against_the_base() -> None:
    detector = CapacityDrop()
    feed(detector, [(0.12, 9e6, 8)])
    assert detector.queue == pytest.approx(0.12)
