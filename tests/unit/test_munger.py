from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import pairwise

import pytest

from sfu.media.munger import MAX_REORDER, RtpMunger


# steps of a scenario
@dataclass(frozen=True)
class F:
    """forward(ext_seq, ts) returns ``out``."""

    ext_seq: int
    ts: int
    out: tuple[int, int] | None


@dataclass(frozen=True)
class D:
    """drop(ext_seq)."""

    ext_seq: int


@dataclass(frozen=True)
class Switch:
    """switch_source(first_ext_seq, first_ts, ts_gap)."""

    first_ext_seq: int
    first_ts: int
    ts_gap: int


@dataclass(frozen=True)
class Last:
    """last_seq and last_ts are these."""

    seq: int | None
    ts: int | None


@dataclass(frozen=True)
class Src:
    """source_seq(out_seq) returns ``ext_seq``."""

    out_seq: int
    ext_seq: int | None


Step = F | D | Switch | Last | Src

# (initial_seq, initial_ts, steps); unless said otherwise the munger starts at 1000 / 5000
SCENARIOS: dict[str, tuple[int, int, list[Step]]] = {
    "nothing sent": (1000, 5000, [Last(None, None), Src(1000, None)]),
    "in order": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            F(101, 3000, (1001, 8000)),
            F(102, 3000, (1002, 8000)),  # same frame
            F(103, 6000, (1003, 11000)),
            Last(1003, 11000),
        ],
    ),
    "incoming loss keeps its gap": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            F(103, 9000, (1003, 14000)),
            Last(1003, 14000),
            F(101, 3000, (1001, 8000)),
            F(102, 6000, (1002, 11000)),
            Last(1003, 14000),  # late packets do not move the newest
        ],
    ),
    "outgoing seq and ts wrap": (
        65534,
        0xFFFFFF00,
        [
            F(7, 0, (65534, 0xFFFFFF00)),
            F(8, 0x80, (65535, 0xFFFFFF80)),
            F(9, 0x100, (0, 0)),
            F(10, 0x200, (1, 0x100)),
            Last(1, 0x100),
            F(8, 0x80, (65535, 0xFFFFFF80)),  # reordered across the wrap
        ],
    ),
    "incoming seq and ts wrap": (
        1000,
        5000,
        [
            F(131070, 0xFFFFFFFF, (1000, 5000)),
            F(131071, 0xFFFFFFFF, (1001, 5000)),
            F(131072, 2999, (1002, 8000)),
            F(131073, 2999, (1003, 8000)),
        ],
    ),
    "reordering": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            F(102, 3000, (1002, 8000)),
            F(101, 3000, (1001, 8000)),
            F(104, 6000, (1004, 11000)),
            F(103, 3000, (1003, 8000)),
            Last(1004, 11000),
        ],
    ),
    "duplicates": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            F(100, 0, (1000, 5000)),
            F(101, 3000, (1001, 8000)),
            F(100, 0, (1000, 5000)),
            F(101, 3000, (1001, 8000)),
            Last(1001, 8000),
        ],
    ),
    "drop in order closes the gap": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            D(101),
            F(102, 3000, (1001, 8000)),
            F(103, 3000, (1002, 8000)),
            Last(1002, 8000),
        ],
    ),
    "several drops in order": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            D(101),
            D(102),
            F(103, 3000, (1001, 8000)),
            D(104),
            F(105, 6000, (1002, 11000)),
            D(106),
            D(107),
            D(108),
            F(109, 9000, (1003, 14000)),
        ],
    ),
    "drop out of order leaves the gap": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            F(102, 0, (1002, 5000)),
            D(101),
            F(103, 0, (1003, 5000)),
            Src(1001, None),
        ],
    ),
    "drop of the newest past a loss": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            D(102),  # 101 is missing: 102 is still the newest
            F(103, 0, (1002, 5000)),
            F(101, 0, (1001, 5000)),  # late: the number it would have had
            F(104, 0, (1003, 5000)),
        ],
    ),
    "a dropped packet forwarded later is refused": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            D(101),
            F(102, 0, (1001, 5000)),
            F(101, 0, None),  # its number went to 102
            F(100, 0, (1000, 5000)),
        ],
    ),
    "late packets across several drops": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            F(102, 0, (1002, 5000)),
            D(103),
            F(104, 0, (1003, 5000)),
            D(105),
            D(106),
            F(107, 0, (1004, 5000)),
            F(101, 0, (1001, 5000)),
            F(104, 0, (1003, 5000)),
            F(107, 0, (1004, 5000)),
        ],
    ),
    "drops before anything was forwarded are ignored": (
        1000,
        5000,
        [D(99), F(101, 0, (1000, 5000)), F(100, 0, None), F(102, 0, (1001, 5000))],
    ),
    "too old to place": (
        1000,
        5000,
        [
            F(5000, 0, (1000, 5000)),
            F(6002, 0, (2002, 5000)),
            F(5002, 0, (1002, 5000)),  # exactly MAX_REORDER behind
            F(5001, 0, None),
        ],
    ),
    "before the source start": (
        1000,
        5000,
        [F(100, 0, (1000, 5000)), F(99, 0, None), F(50, 0, None), F(101, 0, (1001, 5000))],
    ),
    "switch continues seq and ts": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            F(101, 3000, (1001, 8000)),
            Switch(70000, 900000, 3000),
            Last(1001, 8000),
            F(70000, 900000, (1002, 11000)),
            F(70001, 903000, (1003, 14000)),
            Last(1003, 14000),
        ],
    ),
    "switch to a lower seq and ts": (
        1000,
        5000,
        [
            F(90000, 4_000_000_000, (1000, 5000)),
            Switch(66000, 10, 1500),
            F(66000, 10, (1001, 6500)),
            F(66001, 20, (1002, 6510)),
        ],
    ),
    "switch with no gap still moves ts": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            Switch(500, 123, 0),
            F(500, 123, (1001, 5001)),
            Switch(900, 0, -50),
            F(900, 0, (1002, 5002)),
        ],
    ),
    "late packets of the old source are refused": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            F(102, 3000, (1002, 8000)),
            Switch(500, 0, 3000),
            F(101, 3000, None),  # late, old source
            F(500, 0, (1003, 11000)),
            F(103, 6000, None),  # newer than anything of the old source, still refused
            F(501, 0, (1004, 11000)),
        ],
    ),
    "switch before anything was sent": (
        1000,
        5000,
        [
            Switch(200, 7000, 3000),
            F(200, 7000, (1000, 5000)),
            F(201, 10000, (1001, 8000)),
        ],
    ),
    "switch whose first packets are lost or late": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            Switch(500, 90000, 3000),
            F(502, 96000, (1003, 14000)),
            F(500, 90000, (1001, 8000)),
            F(499, 87000, None),  # before the new source's start
            F(501, 93000, (1002, 11000)),
        ],
    ),
    "drop at the start of a new source": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            D(101),
            Switch(500, 0, 3000),
            D(500),
            F(501, 0, (1001, 8000)),
            F(502, 3000, (1002, 11000)),
        ],
    ),
    "drops of the old source do not shift the new one": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            Switch(500, 0, 3000),
            D(101),
            F(500, 0, (1001, 8000)),
            D(499),
            F(501, 0, (1002, 8000)),
        ],
    ),
    "switch back and forth": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            F(101, 3000, (1001, 8000)),
            Switch(70000, 500, 3000),
            F(70000, 500, (1002, 11000)),
            F(70001, 3500, (1003, 14000)),
            Switch(102, 6000, 3000),
            F(102, 6000, (1004, 17000)),
            F(103, 9000, (1005, 20000)),
            F(101, 3000, None),
        ],
    ),
    "switch twice before the new source sends": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            Switch(500, 0, 3000),
            Switch(800, 100, 6000),
            F(800, 100, (1001, 11000)),
            F(500, 0, None),
        ],
    ),
    "switch across the outgoing wrap": (
        65535,
        0xFFFFFFFF,
        [
            F(100, 0, (65535, 0xFFFFFFFF)),
            Switch(7, 0, 1),
            F(7, 0, (0, 0)),
            F(8, 10, (1, 10)),
        ],
    ),
    "source_seq": (
        1000,
        5000,
        [
            F(100, 0, (1000, 5000)),
            D(101),
            F(102, 0, (1001, 5000)),
            F(104, 0, (1003, 5000)),
            Src(1000, 100),
            Src(1001, 102),
            Src(1002, None),  # not sent (yet)
            Src(1003, 104),
            Src(1004, None),
            Src(999, None),
            F(103, 0, (1002, 5000)),
            Src(1002, 103),
            Switch(7000, 0, 3000),
            F(7000, 0, (1004, 8000)),
            Src(1004, 7000),
            Src(1003, 104),  # the old source's packets stay answerable
        ],
    ),
    "source_seq after wrap": (
        65530,
        0,
        [
            *[F(100 + i, 0, ((65530 + i) & 0xFFFF, 0)) for i in range(10)],
            Src(65530, 100),
            Src(65535, 105),
            Src(0, 106),
            Src(3, 109),
            Src(4, None),
            Src(65529, None),
        ],
    ),
    "source_seq forgets after 512": (
        0,
        0,
        [
            *[F(200 + i, 0, (i, 0)) for i in range(1030)],
            Src(1029, 1229),
            Src(518, 718),  # the 512th newest
            Src(517, None),
            Src(0, None),
        ],
    ),
}


@pytest.mark.parametrize(("initial_seq", "initial_ts", "steps"), SCENARIOS.values(), ids=SCENARIOS)
def test_scenarios(initial_seq: int, initial_ts: int, steps: list[Step]) -> None:
    munger = RtpMunger(initial_seq, initial_ts)
    for i, step in enumerate(steps):
        where = f"step {i}: {step}"
        match step:
            case F(ext_seq, ts, out):
                assert munger.forward(ext_seq, ts) == out, where
            case D(ext_seq):
                munger.drop(ext_seq)
            case Switch(first_ext_seq, first_ts, ts_gap):
                munger.switch_source(first_ext_seq, first_ts, ts_gap)
            case Last(seq, ts):
                assert (munger.last_seq, munger.last_ts) == (seq, ts), where
            case Src(out_seq, ext_seq):
                assert munger.source_seq(out_seq) == ext_seq, where


def test_source_packet_tells_sources_apart() -> None:
    munger = RtpMunger(0, 0)
    munger.forward(100, 0)
    assert munger.generation == 1
    munger.switch_source(100, 0, 1)  # another source whose numbers overlap the first's
    munger.forward(100, 0)
    assert munger.generation == 2
    assert munger.source_packet(0) == (1, 100)
    assert munger.source_packet(1) == (2, 100)


@pytest.mark.parametrize("seed", range(5))
def test_random_drops_and_reordering_keep_numbers_unique(seed: int) -> None:
    """Whatever is dropped or reordered, nothing collides, and in-order output is contiguous."""
    rng = random.Random(seed)
    munger = RtpMunger(rng.randrange(65536), 0)
    ext = 100_000
    sent: dict[int, int] = {}  # extended outgoing seq -> incoming seq
    last_out = None
    held: list[int] = []
    for _ in range(3000):
        ext += 1
        if rng.random() < 0.2:
            munger.drop(ext)
            continue
        if rng.random() < 0.1:
            held.append(ext)  # arrives later
            continue
        out = munger.forward(ext, 0)
        assert out is not None
        if not held and last_out is not None:
            assert out[0] == (last_out + 1) & 0xFFFF  # no false gap
        last_out = out[0]
        sent[ext] = out[0]
        if held and rng.random() < 0.3:
            for late in held:
                late_out = munger.forward(late, 0)
                assert late_out is not None
                sent[late] = late_out[0]
            held.clear()
            last_out = None
    # within any window smaller than the 16-bit space, outgoing numbers are distinct
    window = sorted(sent)[-MAX_REORDER:]
    assert len({sent[e] for e in window}) == len(window)
    # and ordered like the incoming ones
    outs = [sent[e] for e in window]
    assert all((b - a) & 0xFFFF < 0x8000 for a, b in pairwise(outs))


def test_without_history_numbers_are_the_same_and_nothing_maps_back() -> None:
    with_history, without = RtpMunger(100, 5000), RtpMunger(100, 5000, history=False)
    for ext_seq in (7, 8, 10, 9, 11):
        ts = ext_seq * 960
        assert with_history.forward(ext_seq, ts) == without.forward(ext_seq, ts)
    assert with_history.source_seq(101) == 8
    assert without.source_seq(101) is None
