"""sfu.media.vp8_rewriter: picture id / TL0PICIDX / KEYIDX continuity and temporal-layer drops."""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import pairwise

import pytest

from sfu.media.vp8_rewriter import MAX_TEMPORAL_LAYER, PICTURE_HISTORY, Vp8Rewriter
from sfu.rtp.vp8 import Vp8Descriptor


def vp8(
    picture_id: int = -1,
    *,
    tid: int = -1,
    y: bool = False,
    tl0: int = -1,
    keyidx: int = -1,
    key: bool = False,
    first: bool = True,
    long: bool = True,
) -> Vp8Descriptor:
    """One packet's descriptor; ``first``: it starts the frame (S=1, PID=0)."""
    return Vp8Descriptor(
        picture_id, long and picture_id >= 0, tl0, tid, y, keyidx, first, 0, key and first, 6
    )


Out = tuple[int, int, int] | None


# steps of a scenario
@dataclass(frozen=True)
class F:
    """forward(d) returns ``out``."""

    d: Vp8Descriptor
    out: Out


@dataclass(frozen=True)
class R:
    """resend(d) returns ``out``."""

    d: Vp8Descriptor
    out: Out


@dataclass(frozen=True)
class Drop:
    """drop(d)."""

    d: Vp8Descriptor


@dataclass(frozen=True)
class Switch:
    """switch_source()."""


@dataclass(frozen=True)
class Max:
    """max_temporal_layer = layer."""

    layer: int


@dataclass(frozen=True)
class Layer:
    """temporal_layer is ``layer``."""

    layer: int


Step = F | R | Drop | Switch | Max | Layer


def pids(*pairs: tuple[int, int | None]) -> list[Step]:
    """In order, no layers: picture id in -> out."""
    return [F(vp8(i), None if o is None else (o, -1, -1)) for i, o in pairs]


SCENARIOS: dict[str, list[Step]] = {
    "in order": pids((10, 10), (11, 11), (12, 12)),
    "15-bit wrap": pids((0x7FFE, 0x7FFE), (0x7FFF, 0x7FFF), (0, 0), (1, 1)),
    "7-bit wrap": [
        F(vp8(126, long=False), (126, -1, -1)),
        F(vp8(127, long=False), (127, -1, -1)),
        F(vp8(0, long=False), (0, -1, -1)),
        F(vp8(1, long=False), (1, -1, -1)),
    ],
    "7-bit source after a 15-bit one: the value continues, the width is the packet's": [
        F(vp8(1000, key=True), (1000, -1, -1)),
        Switch(),
        F(vp8(120, long=False, key=True), (1001 & 0x7F, -1, -1)),
        F(vp8(127, long=False), (1008 & 0x7F, -1, -1)),
        F(vp8(0, long=False), (1009 & 0x7F, -1, -1)),
        Switch(),
        F(vp8(5000, key=True), (1010, -1, -1)),
    ],
    "15-bit wrap while dropping": [
        Max(0),
        F(vp8(0x7FFE, tid=0, tl0=1, key=True), (0x7FFE, 1, -1)),
        F(vp8(0x7FFF, tid=1, tl0=1), None),
        F(vp8(0, tid=0, tl0=2), (0x7FFF, 2, -1)),
        F(vp8(1, tid=1, tl0=2), None),
        F(vp8(2, tid=0, tl0=3), (0, 3, -1)),
    ],
    "7-bit wrap while dropping": [
        Max(0),
        F(vp8(126, tid=0, tl0=1, long=False, key=True), (126, 1, -1)),
        F(vp8(127, tid=1, tl0=1, long=False), None),
        F(vp8(0, tid=0, tl0=2, long=False), (127, 2, -1)),
        F(vp8(1, tid=1, tl0=2, long=False), None),
        F(vp8(2, tid=0, tl0=3, long=False), (0, 3, -1)),
    ],
    "TL0PICIDX wraps with its source": [
        F(vp8(1, tid=0, tl0=254, key=True), (1, 254, -1)),
        F(vp8(2, tid=0, tl0=255), (2, 255, -1)),
        F(vp8(3, tid=0, tl0=0), (3, 0, -1)),
    ],
    "TL0PICIDX continues across a switch, wrapping": [
        F(vp8(1, tid=0, tl0=254, key=True), (1, 254, -1)),
        F(vp8(2, tid=0, tl0=255), (2, 255, -1)),
        F(vp8(3, tid=1, tl0=255), (3, 255, -1)),
        Switch(),
        F(vp8(500, tid=0, tl0=10, key=True), (4, 0, -1)),
        F(vp8(501, tid=1, tl0=10), (5, 0, -1)),
        F(vp8(502, tid=0, tl0=11), (6, 1, -1)),
    ],
    "KEYIDX continues across a switch, wrapping at 5 bits": [
        F(vp8(1, keyidx=30, key=True), (1, -1, 30)),
        F(vp8(2, keyidx=31, key=True), (2, -1, 31)),
        Switch(),
        F(vp8(77, keyidx=3, key=True), (3, -1, 0)),
        F(vp8(78, keyidx=4, key=True), (4, -1, 1)),
    ],
    # L1T3 (0-2-1-2) at most TL1: TL2 frames dropped, their ids given to the next kept frames
    "temporal layers above the maximum are dropped, ids compacted": [
        Max(1),
        F(vp8(0, tid=0, tl0=0, key=True), (0, 0, -1)),
        F(vp8(1, tid=2, tl0=0, y=True), None),
        F(vp8(2, tid=1, tl0=0, y=True), (1, 0, -1)),
        F(vp8(3, tid=2, tl0=0), None),
        F(vp8(4, tid=0, tl0=1), (2, 1, -1)),
        F(vp8(4, tid=0, tl0=1, first=False), (2, 1, -1)),
        F(vp8(5, tid=2, tl0=1), None),
        F(vp8(5, tid=2, tl0=1, first=False), None),  # the whole frame
        F(vp8(6, tid=1, tl0=1), (3, 1, -1)),
        Layer(1),
    ],
    "up only at a layer sync frame of the next layer": [
        Max(0),
        F(vp8(0, tid=0, tl0=0, key=True), (0, 0, -1)),
        Max(2),
        Layer(0),
        F(vp8(1, tid=2, tl0=0, y=True), None),  # TL1 is not there yet: TL2 cannot start
        F(vp8(2, tid=1, tl0=0), None),  # not a sync frame
        F(vp8(3, tid=2, tl0=0), None),
        F(vp8(4, tid=0, tl0=1), (1, 1, -1)),
        F(vp8(5, tid=2, tl0=1), None),
        F(vp8(6, tid=1, tl0=1, y=True), (2, 1, -1)),  # TL1 syncs here
        Layer(1),
        F(vp8(6, tid=1, tl0=1, y=True, first=False), (2, 1, -1)),
        F(vp8(7, tid=2, tl0=1), None),  # TL2 still waits for its sync
        F(vp8(8, tid=0, tl0=2), (3, 2, -1)),
        F(vp8(9, tid=2, tl0=2, y=True), (4, 2, -1)),
        Layer(2),
        F(vp8(10, tid=1, tl0=2), (5, 2, -1)),
        F(vp8(11, tid=2, tl0=2), (6, 2, -1)),
    ],
    "never above the maximum, even at a sync frame": [
        Max(0),
        F(vp8(0, tid=0, tl0=0, key=True), (0, 0, -1)),
        F(vp8(1, tid=1, tl0=0, y=True), None),
        Layer(0),
    ],
    "a keyframe syncs every layer up to the maximum": [
        Max(0),
        F(vp8(0, tid=0, tl0=0, key=True), (0, 0, -1)),
        F(vp8(1, tid=2, tl0=0), None),
        Max(2),
        F(vp8(2, tid=0, tl0=1, key=True), (1, 1, -1)),
        Layer(2),
        F(vp8(3, tid=2, tl0=1), (2, 1, -1)),
    ],
    "down at the next frame, the frame being sent stays whole": [
        F(vp8(0, tid=0, tl0=0, key=True), (0, 0, -1)),
        F(vp8(1, tid=2, tl0=0), (1, 0, -1)),
        Max(0),
        F(vp8(1, tid=2, tl0=0, first=False), (1, 0, -1)),
        Layer(MAX_TEMPORAL_LAYER),
        F(vp8(2, tid=1, tl0=0), None),
        Layer(0),
        F(vp8(3, tid=2, tl0=0), None),
        F(vp8(4, tid=0, tl0=1), (2, 1, -1)),
    ],
    "no TID: nothing is dropped": [
        Max(0),
        F(vp8(0, key=True), (0, -1, -1)),
        F(vp8(1), (1, -1, -1)),
        F(vp8(1, keyidx=4), (1, -1, 4)),
    ],
    # the old source's picture 500 was cut by the switch: the keyframe continues after it
    "switch in the middle of a frame": [
        F(vp8(499, tid=0, tl0=40, keyidx=2, key=True), (499, 40, 2)),
        F(vp8(500, tid=0, tl0=41, keyidx=2), (500, 41, 2)),
        Switch(),
        F(vp8(9000, tid=0, tl0=7, keyidx=17, key=True), (501, 42, 3)),
        F(vp8(9000, tid=0, tl0=7, keyidx=17, first=False), (501, 42, 3)),
        F(vp8(9001, tid=2, tl0=7, keyidx=17), (502, 42, 3)),
        F(vp8(9002, tid=1, tl0=7, keyidx=17, y=True), (503, 42, 3)),
    ],
    "switch after a dropped picture continues after the last kept one": [
        Max(0),
        F(vp8(10, tid=0, tl0=5, key=True), (10, 5, -1)),
        F(vp8(11, tid=2, tl0=5), None),
        Switch(),
        F(vp8(77, tid=0, tl0=200, key=True), (11, 6, -1)),
        F(vp8(78, tid=2, tl0=200), None),  # the maximum holds across sources
        F(vp8(79, tid=0, tl0=201), (12, 7, -1)),
    ],
    "the new source's numbers are its own, even where they equal the old one's": [
        F(vp8(10, tid=0, tl0=3, key=True), (10, 3, -1)),
        F(vp8(10, tid=0, tl0=3, first=False), (10, 3, -1)),
        Switch(),
        F(vp8(10, tid=0, tl0=3, first=False), (11, 4, -1)),
        F(vp8(10, tid=0, tl0=3, key=True), (11, 4, -1)),
    ],
    "a keyframe whose first packet comes late still syncs every layer": [
        Max(0),
        F(vp8(0, tid=0, tl0=0, key=True), (0, 0, -1)),
        Max(2),
        F(vp8(1, tid=0, tl0=1, first=False), (1, 1, -1)),
        Layer(0),
        F(vp8(1, tid=0, tl0=1, key=True), (1, 1, -1)),
        Layer(2),
        F(vp8(2, tid=2, tl0=1), (2, 1, -1)),
    ],
    "a source without picture ids between two with": [
        F(vp8(10, tl0=3, key=True), (10, 3, -1)),
        Switch(),
        F(vp8(tl0=90, key=True), (-1, 4, -1)),
        F(vp8(tl0=91), (-1, 5, -1)),
        Switch(),
        F(vp8(300, tl0=0, key=True), (11, 6, -1)),
    ],
    "without picture ids the layer moves at frame starts": [
        Max(0),
        F(vp8(tid=0, tl0=0, key=True), (-1, 0, -1)),
        F(vp8(tid=1, tl0=0, y=True), None),
        Max(1),
        F(vp8(tid=1, tl0=0, y=True, first=False), None),  # not a frame start: still TL0
        F(vp8(tid=1, tl0=0, y=True), (-1, 0, -1)),
        Layer(1),
        F(vp8(tid=1, tl0=0, first=False), (-1, 0, -1)),
    ],
    "without TL0PICIDX the picture id is still rewritten": [
        F(vp8(5, key=True), (5, -1, -1)),
        Switch(),
        F(vp8(50, key=True), (6, -1, -1)),
    ],
    "reordered packets of kept pictures keep their ids": [
        F(vp8(20, tid=0, tl0=1, key=True), (20, 1, -1)),
        F(vp8(21, tid=1, tl0=1), (21, 1, -1)),
        F(vp8(20, tid=0, tl0=1, first=False), (20, 1, -1)),
        F(vp8(22, tid=0, tl0=2), (22, 2, -1)),
        F(vp8(21, tid=1, tl0=1, first=False), (21, 1, -1)),
    ],
    "reordered around drops": [
        Max(1),
        F(vp8(10, tid=0, tl0=1, key=True), (10, 1, -1)),
        F(vp8(11, tid=2, tl0=1), None),
        F(vp8(13, tid=2, tl0=1), None),  # 12 not here yet
        F(vp8(12, tid=1, tl0=1), (11, 1, -1)),  # first seen late: TL1 passes, in its place
        F(vp8(12, tid=1, tl0=1, first=False), (11, 1, -1)),
        F(vp8(11, tid=2, tl0=1, first=False), None),  # dropped picture: all of it
        F(vp8(14, tid=0, tl0=2), (12, 2, -1)),
        F(vp8(10, tid=0, tl0=1, first=False), (10, 1, -1)),
    ],
    "a picture first seen late above the layer is dropped, its id stays a gap": [
        Max(0),
        F(vp8(10, tid=0, tl0=1, key=True), (10, 1, -1)),
        F(vp8(12, tid=0, tl0=2), (12, 2, -1)),
        F(vp8(11, tid=1, tl0=1), None),
        F(vp8(11, tid=1, tl0=1, first=False), None),
        F(vp8(13, tid=0, tl0=3), (13, 3, -1)),
    ],
    "too old, or from before the source's start": [
        F(vp8(100, key=True), (100, -1, -1)),
        Switch(),
        F(vp8(200, key=True), (101, -1, -1)),
        F(vp8(199), None),
        *pids(*((i, i - 99) for i in range(201, 202 + PICTURE_HISTORY))),
        F(vp8(201 + PICTURE_HISTORY, first=False), (PICTURE_HISTORY + 102, -1, -1)),
        F(vp8(201, first=False), None),  # PICTURE_HISTORY behind the newest
        F(vp8(202, first=False), (103, -1, -1)),
    ],
    "a picture skipped over is unseen, not what its slot held a cycle before": [
        Max(0),
        F(vp8(0, tid=0, tl0=0, key=True), (0, 0, -1)),
        *(F(vp8(i, tid=0, tl0=i), (i, i, -1)) for i in range(1, PICTURE_HISTORY)),
        F(vp8(PICTURE_HISTORY + 1, tid=0, tl0=128), (PICTURE_HISTORY + 1, 128, -1)),
        F(vp8(PICTURE_HISTORY, tid=1, tl0=127), None),  # late, above the layer
    ],
    "a keyframe far behind restarts the numbering": [
        F(vp8(20000, tl0=50, key=True), (20000, 50, -1)),
        F(vp8(20001, tl0=51), (20001, 51, -1)),
        F(vp8(10000, tl0=9), None),  # 10001 behind
        F(vp8(10000, tl0=9, key=True), (20002, 52, -1)),
        F(vp8(10001, tl0=10), (20003, 53, -1)),
    ],
    "a keyframe far ahead restarts the numbering": [
        F(vp8(100, key=True), (100, -1, -1)),
        F(vp8(100 + PICTURE_HISTORY), (100 + PICTURE_HISTORY, -1, -1)),  # a delta: a gap
        F(vp8(9000, key=True), (101 + PICTURE_HISTORY, -1, -1)),
        F(vp8(9001), (102 + PICTURE_HISTORY, -1, -1)),
    ],
    "drop by the caller compacts a new picture only": [
        F(vp8(1, key=True), (1, -1, -1)),
        Drop(vp8(2)),
        F(vp8(2, first=False), None),
        F(vp8(3), (2, -1, -1)),
        Drop(vp8(3)),  # already sent: no effect
        F(vp8(3, first=False), (2, -1, -1)),
        Drop(vp8(1)),
        F(vp8(4), (3, -1, -1)),
    ],
    "retransmissions give the values sent and change nothing": [
        R(vp8(1, key=True), None),  # nothing sent yet
        Max(1),
        F(vp8(1, tid=0, tl0=3, key=True), (1, 3, -1)),
        F(vp8(2, tid=2, tl0=3), None),
        F(vp8(4, tid=1, tl0=3, y=True), (3, 3, -1)),  # 3 not here yet
        Max(0),
        R(vp8(1, tid=0, tl0=3, key=True), (1, 3, -1)),  # would sync every layer if new
        R(vp8(4, tid=1, tl0=3, y=True), (3, 3, -1)),
        R(vp8(2, tid=2, tl0=3), None),  # dropped
        R(vp8(3, tid=2, tl0=3), None),  # never seen
        R(vp8(5, tid=0, tl0=4), None),  # not yet seen
        Layer(1),
        F(vp8(5, tid=0, tl0=4), (4, 4, -1)),
        Layer(0),
        R(vp8(5, tid=0, tl0=4, first=False), (4, 4, -1)),
        Switch(),
        R(vp8(5, tid=0, tl0=4), None),  # another source's
        F(vp8(70, tid=0, tl0=0, key=True), (5, 5, -1)),
        R(vp8(5, tid=0, tl0=4), None),  # before this source's start
    ],
    "retransmissions without picture ids leave the layer": [
        Max(1),
        F(vp8(tid=0, tl0=0, keyidx=1, key=True), (-1, 0, 1)),
        F(vp8(tid=1, tl0=0, y=True, keyidx=1), (-1, 0, 1)),
        Max(0),
        R(vp8(tid=0, tl0=0, keyidx=1, key=True), (-1, 0, 1)),
        R(vp8(tid=1, tl0=0, y=True, keyidx=1), (-1, 0, 1)),
        Layer(1),
        Switch(),
        F(vp8(tid=0, tl0=9, keyidx=7, key=True), (-1, 1, 2)),
        R(vp8(tid=0, tl0=9, keyidx=7, first=False), (-1, 1, 2)),
    ],
}


def run(rewriter: Vp8Rewriter, steps: list[Step]) -> None:
    for i, step in enumerate(steps):
        where = f"step {i}: {step}"
        if isinstance(step, F):
            assert rewriter.forward(step.d) == step.out, where
        elif isinstance(step, R):
            assert rewriter.resend(step.d) == step.out, where
        elif isinstance(step, Drop):
            rewriter.drop(step.d)
        elif isinstance(step, Switch):
            rewriter.switch_source()
        elif isinstance(step, Max):
            rewriter.max_temporal_layer = step.layer
        else:
            assert rewriter.temporal_layer == step.layer, where


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(name: str) -> None:
    run(Vp8Rewriter(), SCENARIOS[name])


def test_the_first_packet_starts_the_first_source() -> None:
    rewriter = Vp8Rewriter(max_temporal_layer=0)
    assert rewriter.temporal_layer == 0
    # not a keyframe (a subscriber started mid-stream): still numbered from it
    assert rewriter.forward(vp8(7, tid=0, tl0=3)) == (7, 3, -1)
    assert rewriter.forward(vp8(8, tid=1, tl0=3, y=True)) is None
    assert Vp8Rewriter().temporal_layer == MAX_TEMPORAL_LAYER


def l1t3(count: int, start: int, keyframe_every: int = 0) -> list[list[Vp8Descriptor]]:
    """``count`` pictures of an L1T3 stream (0-2-1-2, Y on the first TL1/TL2 after each TL0),
    each 1-3 packets."""
    rng = random.Random(start)
    pictures = []
    tl0 = 0
    for n in range(count):
        tid = (0, 2, 1, 2)[n % 4]
        tl0 += tid == 0 and n > 0
        key = n == 0 or (keyframe_every > 0 and n % keyframe_every == 0)
        pid = (start + n) & 0x7FFF
        sync = n % 4 in (1, 2) and n % 8 < 4
        size = rng.randint(1, 3)
        pictures.append(
            [vp8(pid, tid=tid, y=sync, tl0=tl0 & 0xFF, key=key, first=i == 0) for i in range(size)]
        )
    return pictures


@pytest.mark.parametrize("start", [0, 0x7FF0, 12345])
def test_kept_pictures_are_numbered_without_gaps(start: int) -> None:
    rng = random.Random(start)
    rewriter = Vp8Rewriter()
    kept: list[int] = []
    for n, picture in enumerate(l1t3(2000, start, keyframe_every=300)):
        if n % 50 == 0:
            rewriter.max_temporal_layer = rng.randint(0, 3)
        results = {rewriter.forward(d) for d in picture}
        assert len(results) == 1, f"picture {n} split: {results}"
        (result,) = results
        if result is not None:
            kept.append(result[0])
            assert picture[0].tid <= rewriter.temporal_layer <= rewriter.max_temporal_layer
    assert all((b - a) & 0x7FFF == 1 for a, b in pairwise(kept))
    assert 600 < len(kept) < 2000


def test_packets_reordered_within_pictures_change_nothing() -> None:
    pictures = l1t3(400, 77, keyframe_every=150)

    def outcome(shuffle: bool) -> dict[tuple[int, int], Out]:
        rng = random.Random(3)
        rewriter = Vp8Rewriter(max_temporal_layer=1)
        results = {}
        for n, picture in enumerate(pictures):
            if n == 200:
                rewriter.max_temporal_layer = 2
            order = list(enumerate(picture))
            if shuffle:
                rng.shuffle(order)
            for i, d in order:
                results[n, i] = rewriter.forward(d)
        return results

    assert outcome(True) == outcome(False)


def test_resending_changes_nothing_and_gives_what_was_sent() -> None:
    pictures = l1t3(600, 4321, keyframe_every=200)
    packets = [d for picture in pictures for d in picture]

    def outcome(resend: bool) -> list[Out]:
        layers, picks = random.Random(11), random.Random(12)
        rewriter = Vp8Rewriter()
        results: list[Out] = []
        for n, d in enumerate(packets):
            if n % 97 == 0:
                rewriter.max_temporal_layer = layers.randint(0, 3)
            results.append(rewriter.forward(d))
            if resend:
                for _ in range(3):
                    old = picks.randrange(max(0, n - 60), n + 1)
                    assert rewriter.resend(packets[old]) == results[old], (n, old)
        return results

    assert outcome(True) == outcome(False)
