"""The munger (sfu/media/munger.py) and the VP8 rewriter (sfu/media/vp8_rewriter.py) under
hypothesis: reordered, dropped and switched sources still make one continuous stream."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sfu.media.munger import RtpMunger
from tests.fuzz.harnesses.streams import check_munger, check_vp8_hostile, check_vp8_rewriter
from tests.fuzz.reader import Reader

choices = st.binary(min_size=1, max_size=1500)


@given(choices)
def test_munger_numbers_stay_continuous(data: bytes) -> None:
    check_munger(Reader(data))


@given(choices)
def test_vp8_kept_frames_have_consecutive_picture_ids(data: bytes) -> None:
    check_vp8_rewriter(Reader(data))


@given(choices)
def test_vp8_rewriter_takes_any_descriptors(data: bytes) -> None:
    check_vp8_hostile(Reader(data))


@given(
    st.integers(0, 0xFFFF),
    st.permutations(range(60)),
    st.sets(st.integers(0, 59)),
)
def test_munger_numbers_follow_incoming_order(
    initial: int, order: list[int], dropped: set[int]
) -> None:
    """Any arrival order of 60 packets (within the reorder window), some dropped while newest:
    outgoing numbers increase with incoming ones, no two alike, no gap but for the drops."""
    munger = RtpMunger(initial, 0)
    newest = -1
    out: dict[int, int] = {}
    for ext in order:
        ext += 100_000
        if ext - 100_000 in dropped and ext > newest and newest >= 0:
            munger.drop(ext)
        else:
            forwarded = munger.forward(ext, 0)
            if forwarded is not None:
                out[ext] = (forwarded[0] - initial) & 0xFFFF
        newest = max(newest, ext)
    numbers = [out[e] for e in sorted(out)]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
