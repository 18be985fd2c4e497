"""sfu.memory.MemoryTrimmer: a trim soon after a departure, at most one per interval."""

from __future__ import annotations

import asyncio
import time

import pytest

from sfu.memory import MemoryTrimmer, _malloc_trim


@pytest.mark.parametrize(
    ("departures", "wait", "trims"),
    [
        ([0.0], 0.3, 1),  # one leave: one trim, after the delay (0.1 s)
        ([0.0], 0.03, 0),  # not before the delay
        ([0.0, 0.01, 0.02], 0.3, 1),  # a wave of leaves: one trim
        ([0.0, 0.4], 0.7, 1),  # a leave soon after a trim waits for the interval (1 s) ...
        ([0.0, 0.4], 1.4, 2),  # ... and then trims again (at 1.1 s)
        ([], 0.3, 0),
    ],
)
async def test_trims_after_departures(departures: list[float], wait: float, trims: int) -> None:
    calls: list[int] = []

    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    trimmer = MemoryTrimmer(trim, time.monotonic, delay=0.1, interval=1.0)
    start = time.monotonic()
    for at in departures:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        trimmer.departed()
    await asyncio.sleep(max(0.0, start + wait - time.monotonic()))
    trimmer.close()
    assert (len(calls), trimmer.trims) == (trims, trims)
    assert set(calls) <= {0}


def test_glibc_trim_is_found_here() -> None:
    # this machine's C library is glibc: a trim must be available (elsewhere it is None)
    function = _malloc_trim()
    assert function is not None
    assert function(0) in (0, 1)
