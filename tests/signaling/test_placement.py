"""signaling/placement.py: a new room's worker, table-driven with an injected clock."""

from __future__ import annotations

import math

import pytest

from signaling.placement import RECENT, ROOM_WEIGHT, Placement, WorkerLoad, smoothed

W = WorkerLoad


@pytest.mark.parametrize(
    ("loads", "expected"),
    [
        ([W(0, up=True, cpu=0.5), W(1, up=True, cpu=0.2)], 1),  # the least busy
        ([W(0, up=True, cpu=0.2), W(1, up=False, cpu=0.0)], 0),  # a worker down takes nothing
        ([W(0, up=True, draining=True), W(1, up=True, cpu=0.9)], 1),  # nor one draining
        ([W(0, up=True, cpu=0.3, packets_out=900), W(1, up=True, cpu=0.3, packets_out=100)], 1),
        ([W(3, up=True, cpu=0.3), W(2, up=True, cpu=0.3)], 2),  # then the lower index
        ([W(0, up=False), W(1, up=True, draining=True)], None),  # none can take it
        ([], None),
    ],
)
def test_a_new_room_goes_to_the_least_loaded_worker_that_can_take_it(
    loads: list[WorkerLoad], expected: int | None
) -> None:
    assert Placement().choose(loads, 0.0) == expected


def test_a_burst_of_new_rooms_is_spread_until_the_load_shows() -> None:
    placement = Placement()
    idle = [W(0, up=True, cpu=0.0), W(1, up=True, cpu=0.0), W(2, up=True, cpu=0.12)]
    chosen = [placement.choose(idle, 0.1 * i) for i in range(7)]
    # each placement weighs ROOM_WEIGHT; 2 starts 0.12 behind: its turn once the others got 3
    assert chosen == [0, 1, 0, 1, 0, 1, 2]
    # RECENT seconds on, the placements no longer count: the load reports carry them
    assert placement.choose(idle, RECENT + 0.6) == 0
    assert ROOM_WEIGHT > 0


@pytest.mark.parametrize(
    ("previous", "sample", "elapsed", "expected"),
    [
        (None, 0.4, 1.0, 0.4),  # the first report is the mean
        (0.0, 1.0, RECENT, 1 - math.exp(-1)),  # one time constant: 63 % of the way
        (0.5, 0.5, 1.0, 0.5),
        (0.2, 0.8, 0.0, 0.2),  # no time passed: no change
        (0.0, 1.0, 100 * RECENT, 1.0),
    ],
)
def test_cpu_is_smoothed_over_time_not_over_reports(
    previous: float | None, sample: float, elapsed: float, expected: float
) -> None:
    assert smoothed(previous, sample, elapsed) == pytest.approx(expected)
