from __future__ import annotations

from dataclasses import dataclass

import pytest

from sfu.media.nack import LossTracker, RingHistory


@dataclass(frozen=True)
class P:
    """on_packet(ext_seq, now)."""

    ext_seq: int
    now: float


@dataclass(frozen=True)
class Due:
    """due(now, rtt) returns ``nacks``, after which ``missing`` remain."""

    now: float
    rtt: float
    nacks: list[int]
    missing: int


Step = P | Due

# (LossTracker keyword arguments, steps)
SCENARIOS: dict[str, tuple[dict[str, float], list[Step]]] = {
    "no loss": ({}, [P(1, 0.0), P(2, 0.01), P(3, 0.02), Due(0.02, 0.1, [], 0)]),
    "first packet is not a loss": ({}, [P(1000, 0.0), Due(0.0, 0.1, [], 0)]),
    "a gap, retried after an RTT": (
        {},
        [
            P(1, 0.0),
            P(4, 0.01),
            Due(0.01, 0.1, [2, 3], 2),
            Due(0.05, 0.1, [], 2),
            Due(0.12, 0.1, [2, 3], 2),
            P(2, 0.13),
            Due(0.2, 0.1, [], 1),
            Due(0.23, 0.1, [3], 1),
            P(3, 0.24),
            Due(0.5, 0.1, [], 0),
        ],
    ),
    "retry interval at least 20 ms": (
        {},
        [
            P(1, 0.0),
            P(3, 0.0),
            Due(0.0, 0.001, [2], 1),
            Due(0.01, 0.001, [], 1),
            Due(0.02, 0.001, [2], 1),
            Due(0.03, 0.0, [], 1),
            Due(0.04, 0.0, [2], 1),
        ],
    ),
    "losses found at different times keep their own clocks": (
        {},
        [
            P(1, 0.0),
            P(3, 0.0),
            Due(0.0, 0.1, [2], 1),
            P(5, 0.05),
            Due(0.05, 0.1, [4], 2),
            Due(0.1, 0.1, [2], 2),
            Due(0.16, 0.1, [4], 2),
        ],
    ),
    "give up after max_attempts": (
        {"max_attempts": 3},
        [
            P(1, 0.0),
            P(3, 0.0),
            Due(0.0, 0.1, [2], 1),
            Due(0.1, 0.1, [2], 1),
            Due(0.2, 0.1, [2], 1),
            Due(0.3, 0.1, [], 0),
            P(2, 0.35),  # arrives after all: nothing to do
            Due(0.4, 0.1, [], 0),
        ],
    ),
    "give up after max_age": (
        {"max_age": 0.25},
        [
            P(1, 0.0),
            P(3, 0.0),
            Due(0.0, 0.1, [2], 1),
            Due(0.1, 0.1, [2], 1),
            Due(0.25, 0.1, [2], 1),  # exactly max_age old: still asked for
            Due(0.26, 0.1, [], 0),
        ],
    ),
    "age counts from detection, not from the first packet": (
        {"max_age": 0.25},
        [P(1, 0.0), P(3, 1.0), Due(1.0, 0.1, [2], 1), Due(1.2, 0.1, [2], 1)],
    ),
    "a jump of max_missing is recorded": (
        {"max_missing": 10},
        [P(1, 0.0), P(12, 0.0), Due(0.0, 0.1, list(range(2, 12)), 10)],
    ),
    "a jump larger than max_missing resets": (
        {"max_missing": 10},
        [
            P(1, 0.0),
            P(3, 0.0),
            P(15, 0.0),
            Due(0.0, 0.1, [], 0),
            P(16, 0.0),
            P(18, 0.0),
            Due(0.0, 0.1, [17], 1),
        ],
    ),
    "at most max_missing, the oldest are forgotten": (
        {"max_missing": 10},
        [P(1, 0.0), P(12, 0.0), P(23, 0.0), Due(0.0, 0.1, list(range(13, 23)), 10)],
    ),
    "reordered and duplicate packets are not losses": (
        {},
        [P(5, 0.0), P(3, 0.0), P(5, 0.0), P(4, 0.0), P(6, 0.0), Due(0.0, 0.1, [], 0)],
    ),
    "losses across the 16-bit wrap": (
        {},
        [P(65534, 0.0), P(65538, 0.0), Due(0.0, 0.1, [65535, 65536, 65537], 3)],
    ),
}


@pytest.mark.parametrize(("kwargs", "steps"), SCENARIOS.values(), ids=SCENARIOS)
def test_loss_tracker(kwargs: dict[str, float], steps: list[Step]) -> None:
    tracker = LossTracker(
        max_missing=int(kwargs.get("max_missing", 512)),
        max_age=kwargs.get("max_age", 1.0),
        max_attempts=int(kwargs.get("max_attempts", 10)),
    )
    for i, step in enumerate(steps):
        match step:
            case P(ext_seq, now):
                tracker.on_packet(ext_seq, now)
            case Due(now, rtt, nacks, missing):
                assert tracker.due(now, rtt) == nacks, f"step {i}: {step}"
                assert tracker.missing == missing, f"step {i}: {step}"


def test_missing_counts_after_on_packet() -> None:
    tracker = LossTracker()
    tracker.on_packet(10, 0.0)
    tracker.on_packet(15, 0.0)
    assert tracker.missing == 4
    tracker.on_packet(12, 0.0)
    assert tracker.missing == 3


# (size, operations: ("put", key, value) / ("get", key, expected) / ("clear",))
RING_CASES: list[tuple[int, list[tuple[object, ...]]]] = [
    (4, [("get", 0, None), ("get", 3, None)]),
    (4, [("put", 1, "a"), ("get", 1, "a"), ("get", 5, None), ("get", 2, None)]),
    (4, [("put", 1, "a"), ("put", 5, "b"), ("get", 1, None), ("get", 5, "b")]),
    (4, [("put", 1, "a"), ("put", 2, "b"), ("put", 1, "c"), ("get", 1, "c"), ("get", 2, "b")]),
    (4, [("put", 7, "a"), ("clear",), ("get", 7, None), ("put", 7, "b"), ("get", 7, "b")]),
    (1, [("put", 1, "a"), ("get", 1, "a"), ("put", 2, "b"), ("get", 1, None)]),
    (1024, [("put", 65536 + 7, "x"), ("get", 7, None), ("get", 65536 + 7, "x")]),
]


@pytest.mark.parametrize(("size", "operations"), RING_CASES)
def test_ring_history(size: int, operations: list[tuple[object, ...]]) -> None:
    ring: RingHistory[str] = RingHistory(size)
    for op in operations:
        match op:
            case ("put", int(key), str(value)):
                ring.put(key, value)
            case ("get", int(key), expected):
                assert ring.get(key) == expected, op
            case ("clear",):
                ring.clear()
            case _:
                raise AssertionError(op)


@pytest.mark.parametrize("size", [0, 3, 6, 1000, -4])
def test_ring_history_size_must_be_power_of_two(size: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        RingHistory[int](size)
