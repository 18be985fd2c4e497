"""The client's reconnection backoff (sfu_client.reconnect): table-driven, on a fake clock."""

from __future__ import annotations

import pytest

from sfu_client.reconnect import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(backoff: Backoff, clock: Clock, attempt_takes: float) -> list[float]:
    """The waits until it gives up, each attempt taking ``attempt_takes`` seconds."""
    waits: list[float] = []
    while True:
        clock.now += attempt_takes
        wait = backoff.next_wait()
        if wait is None:
            return waits
        waits.append(wait)
        clock.now += wait
        assert len(waits) < 100, "it never gives up"


@pytest.mark.parametrize(
    ("first", "longest", "within", "attempts", "attempt_takes", "waits"),
    [
        # the resume loop: doubling to the longest, until the window leaves no time
        (0.1, 2.0, 5.0, None, 0.0, [0.1, 0.2, 0.4, 0.8, 1.6]),  # 2.0 would end at 5.1
        (0.1, 2.0, 15.0, None, 0.0, [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0, 2.0]),
        # attempts that take time use the window up sooner
        (0.1, 2.0, 5.0, None, 1.0, [0.1, 0.2, 0.4]),
        # joining again: bounded in count first
        (1.0, 4.0, 10.0, 4, 0.0, [1.0, 2.0, 4.0]),
        (1.0, 4.0, 10.0, 1, 0.0, []),
        # ... or in time, when attempts hang until their timeout
        (1.0, 4.0, 10.0, 4, 3.0, [1.0, 2.0]),
        # a window shorter than the first wait: one attempt only
        (1.0, 4.0, 0.5, None, 0.0, []),
        (1.0, 4.0, 0.0, 3, 0.0, []),
    ],
)
def test_waits(
    first: float,
    longest: float,
    within: float,
    attempts: int | None,
    attempt_takes: float,
    waits: list[float],
) -> None:
    clock = Clock()
    backoff = Backoff(clock, first=first, longest=longest, within=within, attempts=attempts)
    assert run(backoff, clock, attempt_takes) == pytest.approx(waits)
    assert backoff.failed == len(waits) + 1


def test_remaining_bounds_an_attempt() -> None:
    clock = Clock()
    backoff = Backoff(clock, first=0.1, longest=2.0, within=3.0)
    assert backoff.remaining() == 3.0
    clock.now += 2.5
    assert backoff.remaining() == pytest.approx(0.5)
    clock.now += 1.0
    assert backoff.remaining() == 0.0


@pytest.mark.parametrize(("first", "longest"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_waits(first: float, longest: float) -> None:
    with pytest.raises(ValueError, match="0 < first <= longest"):
        Backoff(Clock(), first=first, longest=longest, within=1.0)
