"""sfu.memory.MemoryReclaimer: a collection and a trim soon after a departure, rate-limited."""

from __future__ import annotations

import asyncio
import time

import pytest

import sfu.memory
from sfu.memory import MemoryReclaimer, _malloc_trim


@pytest.mark.parametrize(
    ("departures", "wait", "runs"),
    [
        ([0.0], 0.3, 1),  # one leave: one run, after the delay (0.1 s)
        ([0.0], 0.03, 0),  # not before the delay
        ([0.0, 0.01, 0.02], 0.3, 1),  # a wave of leaves: one run
        ([0.0, 0.4], 0.7, 1),  # a leave soon after a run waits for the interval (1 s) ...
        ([0.0, 0.4], 1.4, 2),  # ... and then runs again (at 1.1 s)
        ([], 0.3, 0),
    ],
)
async def test_reclaims_after_departures(departures: list[float], wait: float, runs: int) -> None:
    calls: list[str] = []

    def collect() -> int:
        calls.append("collect")
        return 0

    def trim(pad: int) -> int:
        assert pad == 0
        calls.append("trim")
        return 1

    reclaimer = MemoryReclaimer(collect, trim, time.monotonic, delay=0.1, interval=1.0)
    start = time.monotonic()
    for at in departures:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        reclaimer.departed()
    await asyncio.sleep(max(0.0, start + wait - time.monotonic()))
    reclaimer.close()
    assert calls == ["collect", "trim"] * runs  # collected first: the trim returns what it freed
    assert reclaimer.runs == runs


async def test_a_dear_collection_spaces_the_next_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # the collections' pauses take at most 1 / PAUSE_SHARE of the event loop
    monkeypatch.setattr(sfu.memory, "PAUSE_SHARE", 10)
    monkeypatch.setattr(sfu.memory, "MAX_INTERVAL", 10.0)
    now = [0.0]

    def collect() -> int:
        now[0] += 0.05  # a 50 ms pause
        return 0

    reclaimer = MemoryReclaimer(collect, lambda pad: 1, lambda: now[0], delay=0.01, interval=0.1)
    reclaimer.departed()
    await asyncio.sleep(0.05)
    assert reclaimer.runs == 1
    assert reclaimer.last_pause == pytest.approx(0.05)
    assert reclaimer._gap == pytest.approx(0.5)  # 10 x 50 ms, not the 0.1 s interval
    now[0] += 0.1
    reclaimer.departed()  # 0.1 s after that run: waits for the other 0.4 s
    handle = reclaimer._pending
    assert handle is not None
    assert handle.when() - asyncio.get_running_loop().time() == pytest.approx(0.4, abs=0.05)
    reclaimer.close()


def test_glibc_trim_is_found_here() -> None:
    # this machine's C library is glibc: a trim must be available (elsewhere it is None)
    function = _malloc_trim()
    assert function is not None
    assert function(0) in (0, 1)
