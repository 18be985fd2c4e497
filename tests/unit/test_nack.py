from __future__ import annotations

from dataclasses import dataclass

import pytest

from sfu.media.nack import LossTracker, PacketHistory


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
# (size, max_age, operations): ("put", key, value, now) / ("get", key, expected) / ("clear",)
HISTORY_CASES = {
    "a put packet is found": (4, 1.0, [("put", 1, "a", 0.0), ("get", 1, "a"), ("get", 5, None)]),
    "a key size later takes the slot": (
        4,
        9.0,
        [("put", 1, "a", 0.0), ("put", 5, "b", 0.1), ("get", 1, None), ("get", 5, "b")],
    ),
    "a put replaces the same key": (
        4,
        9.0,
        [("put", 1, "a", 0.0), ("put", 2, "b", 0.0), ("put", 1, "c", 0.0), ("get", 1, "c")],
    ),
    "clear forgets everything": (
        4,
        9.0,
        [("put", 7, "a", 0.0), ("clear",), ("get", 7, None), ("put", 7, "b", 0.0), ("get", 7, "b")],
    ),
    "size one keeps the newest": (
        1,
        9.0,
        [("put", 1, "a", 0.0), ("get", 1, "a"), ("put", 2, "b", 0.0), ("get", 1, None)],
    ),
    "keys are extended sequence numbers": (
        1024,
        9.0,
        [("put", 65536 + 7, "x", 0.0), ("get", 7, None), ("get", 65536 + 7, "x")],
    ),
    "older than max_age leaves at a later put": (
        16,
        1.0,
        [
            ("put", 10, "a", 0.0),
            ("put", 11, "b", 0.5),
            ("put", 12, "c", 1.2),  # a is 1.2 s old now: gone; b (0.7 s) stays
            ("get", 10, None),
            ("get", 11, "b"),
            ("get", 12, "c"),
            ("put", 13, "d", 1.6),  # b is 1.1 s old
            ("get", 11, None),
            ("get", 12, "c"),
        ],
    ),
    "exactly max_age old stays": (
        16,
        1.0,
        [("put", 1, "a", 0.0), ("put", 2, "b", 1.0), ("get", 1, "a")],
    ),
    "a lost packet does not stop eviction behind it": (
        16,
        1.0,
        [
            ("put", 1, "a", 0.0),
            ("put", 3, "c", 0.1),  # 2 was lost
            ("put", 4, "d", 1.15),
            ("get", 1, None),
            ("get", 3, None),
            ("get", 4, "d"),
        ],
    ),
    "a late retransmission of an evicted packet is kept": (
        16,
        1.0,
        [("put", 5, "e", 0.0), ("put", 6, "f", 2.0), ("put", 5, "E", 2.1), ("get", 5, "E")],
    ),
    "a jump further than size starts over": (
        4,
        9.0,
        [("put", 1, "a", 0.0), ("put", 100, "z", 0.1), ("put", 101, "y", 0.2), ("get", 100, "z")],
    ),
}


@pytest.mark.parametrize(
    ("size", "max_age", "operations"), HISTORY_CASES.values(), ids=HISTORY_CASES
)
def test_packet_history(size: int, max_age: float, operations: list[tuple[object, ...]]) -> None:
    history: PacketHistory[str] = PacketHistory(size, max_age)
    for op in operations:
        match op:
            case ("put", int(key), str(value), float(now)):
                history.put(key, value, now)
            case ("get", int(key), expected):
                assert history.get(key) == expected, op
            case ("clear",):
                history.clear()
            case _:
                raise AssertionError(op)


def test_packet_history_holds_max_age_of_a_steady_stream() -> None:
    history: PacketHistory[int] = PacketHistory(512, 1.0)
    for seq in range(3000):  # 30 packets/s for 100 s
        history.put(seq, seq, seq / 30)
    assert len(history) == 31  # the last second, both ends included
    assert history.get(2999) == 2999 and history.get(2969) == 2969 and history.get(2968) is None


@pytest.mark.parametrize("size", [0, 3, 6, 1000, -4])
def test_packet_history_size_must_be_power_of_two(size: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        PacketHistory[int](size)
