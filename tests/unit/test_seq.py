from __future__ import annotations

import pytest

from sfu.media.seq import SequenceUnwrapper, TimestampUnwrapper

S = 0x10000  # the first sequence number lands in cycle 1
T = 0x100000000


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ([0], [S]),
        ([100, 101, 102], [S + 100, S + 101, S + 102]),
        ([65534, 65535, 0, 1], [S + 65534, S + 65535, 2 * S, 2 * S + 1]),  # wrap forward
        ([65535, 0, 65535, 1], [S + 65535, 2 * S, S + 65535, 2 * S + 1]),  # reordered across it
        ([0, 65535, 65534, 1], [S, S - 1, S - 2, S + 1]),  # older than the first: still > 0
        ([10, 12, 11, 13], [S + 10, S + 12, S + 11, S + 13]),  # reordering
        ([10, 10, 10], [S + 10] * 3),  # duplicates
        ([0, 32767], [S, S + 32767]),  # just under half the space: forward
        ([0, 32768], [S, S - 32768]),  # half the space: backward
        ([40000, 0], [S + 40000, 2 * S]),  # forward jump across the wrap
        (
            [0, 20000, 40000, 60000, 14464, 34464],
            [S, S + 20000, S + 40000, S + 60000, 2 * S + 14464, 2 * S + 34464],
        ),
        ([5, 1000, 2000, 500], [S + 5, S + 1000, S + 2000, S + 500]),
        # a stream that restarts further back continues from there
        ([30000, 30001, 10000, 10001], [S + 30000, S + 30001, S + 10000, S + 10001]),
    ],
)
def test_sequence_unwrapper(inputs: list[int], expected: list[int]) -> None:
    unwrapper = SequenceUnwrapper()
    assert [unwrapper.unwrap(seq) for seq in inputs] == expected


def test_sequence_unwrapper_many_cycles() -> None:
    unwrapper = SequenceUnwrapper()
    values = [unwrapper.unwrap(i & 0xFFFF) for i in range(0, 5 * S, 7)]
    assert values == [S + i for i in range(0, 5 * S, 7)]


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ([0], [T]),
        ([3000, 6000, 9000], [T + 3000, T + 6000, T + 9000]),
        ([0xFFFFF000, 0x00000800], [T + 0xFFFFF000, 2 * T + 0x800]),  # wrap forward
        ([0x800, 0xFFFFF000], [T + 0x800, T - 0x800 - 0x1000 + 0x800]),  # older than the first
        ([0xFFFFFF00, 0x100, 0xFFFFFF80], [2 * T - 0x100, 2 * T + 0x100, 2 * T - 0x80]),
        ([90000, 90000, 87000], [T + 90000, T + 90000, T + 87000]),
        ([0, 0x7FFFFFFF], [T, T + 0x7FFFFFFF]),
        ([0, 0x80000000], [T, T - 0x80000000]),
    ],
)
def test_timestamp_unwrapper(inputs: list[int], expected: list[int]) -> None:
    unwrapper = TimestampUnwrapper()
    assert [unwrapper.unwrap(ts) for ts in inputs] == expected


def test_timestamp_unwrapper_many_cycles() -> None:
    unwrapper = TimestampUnwrapper()
    step = 0x3FFF_FFFF  # a quarter of the space at a time
    values = [unwrapper.unwrap((i * step) & 0xFFFFFFFF) for i in range(20)]
    assert values == [T + i * step for i in range(20)]
