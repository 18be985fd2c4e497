"""RetransmitBudget: NACKs are answered as a lossy link needs, a flood costs at most about the
stream again."""

from __future__ import annotations

import pytest

from sfu.media.retransmit_budget import BASE_RATE, RESERVE, RetransmitBudget


def answered(budget: RetransmitBudget, asks: int, forwarded: int, now: float) -> int:
    return sum(budget.allow(forwarded, now) for _ in range(asks))


@pytest.mark.parametrize(
    ("name", "rate", "loss", "seconds", "answered_share"),
    [
        ("5 % loss of a 100 packets/s stream: all answered", 100, 0.05, 10, 1.0),
        ("30 % loss of a 300 packets/s stream: all answered", 300, 0.30, 10, 1.0),
        ("a flood: 1000 asks/s on a 50 packets/s stream", 50, 20.0, 10, 0.0),
    ],
)
def test_what_is_answered_over_time(
    name: str, rate: int, loss: float, seconds: int, answered_share: float
) -> None:
    budget = RetransmitBudget()
    forwarded = total = asked = 0
    for tick in range(seconds * 10):  # every 100 ms
        forwarded += rate // 10
        asks = round(rate * loss / 10)
        asked += asks
        total += answered(budget, asks, forwarded, tick / 10)
    if answered_share == 1.0:
        assert total == asked, name
    else:  # bounded by the reserve, the stream and the base allowance
        assert total <= RESERVE + forwarded + BASE_RATE * seconds, name
        assert budget.refused == asked - total > 0


def test_a_lost_keyframe_is_repaired_at_once() -> None:
    budget = RetransmitBudget()
    assert answered(budget, 200, 0, 0.0) == 200  # 200 packets lost in one burst
    assert budget.refused == 0


def test_the_reserve_is_spent_and_refills_with_the_stream() -> None:
    budget = RetransmitBudget()
    assert answered(budget, 1000, 0, 0.0) == RESERVE
    assert not budget.allow(0, 0.0)
    assert budget.allow(1, 0.0)  # one packet forwarded: one more retransmission
    assert answered(budget, 10, 1, 0.5) == BASE_RATE * 0.5  # and the base rate over time
    assert answered(budget, 1000, 10_000, 1.0) == RESERVE  # never more than the reserve
