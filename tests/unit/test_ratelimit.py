"""TokenBucket: bursts pass, a flood waits at the rate."""

from __future__ import annotations

import pytest

from signaling.ratelimit import TokenBucket


@pytest.mark.parametrize(
    ("rate", "burst", "arrivals", "waits"),
    [
        (10, 3, [0, 0, 0], [0, 0, 0]),  # a burst within the bucket
        (10, 3, [0, 0, 0, 0, 0], [0, 0, 0, 0.1, 0.2]),  # beyond it: one slot each, in order
        (10, 1, [0, 0.1, 0.2, 0.3], [0, 0, 0, 0]),  # at the rate: never waits
        (10, 2, [0, 0, 0, 1.0, 1.0], [0, 0, 0.1, 0, 0]),  # refilled after a pause (to burst)
        (100, 5, [0.0] * 8, [0, 0, 0, 0, 0, 0.01, 0.02, 0.03]),
    ],
)
def test_waits(rate: float, burst: float, arrivals: list[float], waits: list[float]) -> None:
    bucket = TokenBucket(rate, burst, 0.0)
    got = [bucket.take(at) for at in arrivals]
    assert got == pytest.approx(waits)
    assert bucket.delayed == sum(1 for w in waits if w > 0)


def test_a_flood_is_handled_at_the_rate() -> None:
    bucket = TokenBucket(50, 100, 0.0)
    clock = 0.0
    for _ in range(2000):  # 2,000 messages arriving at once, each handled after its wait
        clock += bucket.take(clock)
    assert clock == pytest.approx((2000 - 100) / 50)


@pytest.mark.parametrize(("rate", "burst"), [(0, 10), (-1, 10), (10, 0.5)])
def test_nonsense_is_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="token bucket"):
        TokenBucket(rate, burst, 0.0)
