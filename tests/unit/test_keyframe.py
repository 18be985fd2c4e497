from __future__ import annotations

from itertools import pairwise

import pytest

from sfu.media.keyframe import KeyframeRequester

# a step: (time, event, expected result, expected next_due afterwards);
# events: "request" and "due" return a bool, "keyframe" returns None
Step = tuple[float, str, bool | None, float | None]

SCENARIOS: dict[str, tuple[float, list[Step]]] = {
    "the first request is sent": (0.5, [(0.0, "request", True, None)]),
    "nothing pending": (0.5, [(0.0, "due", False, None), (9.0, "due", False, None)]),
    "requests within the interval coalesce": (
        0.5,
        [
            (0.0, "request", True, None),
            (0.125, "request", False, 0.5),
            (0.25, "request", False, 0.5),
            (0.375, "due", False, 0.5),
            (0.5, "due", True, None),
            (0.625, "due", False, None),
        ],
    ),
    "a keyframe cancels the pending request": (
        0.5,
        [
            (0.0, "request", True, None),
            (0.125, "request", False, 0.5),
            (0.25, "keyframe", None, None),
            (0.75, "due", False, None),
        ],
    ),
    "a request after the interval is sent at once": (
        0.5,
        [(0.0, "request", True, None), (0.5, "request", True, None), (1.25, "request", True, None)],
    ),
    "a request once the pending one is due is sent at once": (
        0.5,
        [
            (0.0, "request", True, None),
            (0.125, "request", False, 0.5),
            (0.75, "request", True, None),
            (0.75, "due", False, None),
            (1.0, "request", False, 1.25),
        ],
    ),
    "a late due counts as sent then": (
        0.5,
        [
            (0.0, "request", True, None),
            (0.125, "request", False, 0.5),
            (0.75, "due", True, None),
            (1.0, "request", False, 1.25),
            (1.125, "request", False, 1.25),
            (1.25, "due", True, None),
            (1.5, "due", False, None),
        ],
    ),
    "a keyframe does not reset the throttle": (
        0.5,
        [
            (0.0, "request", True, None),
            (0.125, "keyframe", None, None),
            (0.25, "request", False, 0.5),
            (0.5, "due", True, None),
        ],
    ),
    "a keyframe before any request changes nothing": (
        0.5,
        [(0.0, "keyframe", None, None), (0.125, "request", True, None)],
    ),
    "a new request after a cancelled one waits again": (
        0.5,
        [
            (0.0, "request", True, None),
            (0.125, "request", False, 0.5),
            (0.25, "keyframe", None, None),
            (0.375, "request", False, 0.5),
            (0.5, "due", True, None),
        ],
    ),
    "interval 0: every request is sent": (
        0.0,
        [(0.0, "request", True, None), (0.0, "request", True, None), (0.0, "due", False, None)],
    ),
    "a longer interval": (
        1.0,
        [(10.0, "request", True, None), (10.5, "request", False, 11.0), (11.0, "due", True, None)],
    ),
}


@pytest.mark.parametrize(("min_interval", "steps"), SCENARIOS.values(), ids=SCENARIOS)
def test_keyframe_requester(min_interval: float, steps: list[Step]) -> None:
    requester = KeyframeRequester(min_interval)
    for now, event, expected, next_due in steps:
        result: bool | None
        if event == "request":
            result = requester.request(now)
        elif event == "due":
            result = requester.due(now)
        else:
            result = requester.on_keyframe(now)  # type: ignore[func-returns-value]
        assert result == expected, (now, event)
        assert requester.next_due == next_due, (now, event)


def test_many_subscribers_one_request_per_interval() -> None:
    requester = KeyframeRequester(0.5)
    sent = []
    for tick in range(400):  # for 4 s, some subscriber asks every 10 ms
        now = tick * 0.01
        if requester.request(now) or requester.due(now):
            sent.append(now)
    assert len(sent) == 8
    assert all(b - a >= 0.5 - 1e-9 for a, b in pairwise(sent))
