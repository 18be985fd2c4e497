"""The trendline's running least-squares sums give the slope a pass over the window would."""

from __future__ import annotations

import random
from collections import deque

import pytest

from sfu.bwe.trendline import _RunningFit


def direct_slope(points: deque[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def test_matches_the_direct_fit_over_a_long_run() -> None:
    rng = random.Random(3)
    fit, window = _RunningFit(), deque[tuple[float, float]]()
    x = 5_000_000.0  # ms since the first arrival, hours into a call
    for i in range(3 * _RunningFit.RESET + 7):
        x += rng.uniform(1, 40)
        point = (x, 0.01 * i + rng.gauss(0, 2))
        window.append(point)
        fit.add(*point)
        if len(window) > 20:
            fit.remove(*window.popleft())
        if len(window) == 20:
            assert fit.slope(window) == pytest.approx(direct_slope(window), rel=1e-6, abs=1e-9)


def test_equal_x_has_no_slope() -> None:
    fit, window = _RunningFit(), deque([(7.0, 1.0), (7.0, 2.0), (7.0, 3.0)])
    for point in window:
        fit.add(*point)
    assert fit.slope(window) is None
