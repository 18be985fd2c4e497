"""SequenceValidator: RFC 3550 §A.1 probation, packet by packet (no clock, no network)."""

from __future__ import annotations

import random

import pytest

from sfu.media.probation import (
    CONTINUED,
    DROP,
    HOLD,
    MAX_DROPOUT,
    MAX_GAP,
    RESTARTED,
    SequenceValidator,
)

S = 0x10000  # a source's first packet is numbered in cycle 1 (as SequenceUnwrapper does)
NAMES = {DROP: "drop", HOLD: "hold"}


def feed(validator: SequenceValidator, seqs: list[int]) -> list[object]:
    """What each packet gets, re-feeding a held packet and its successor as the caller must."""
    out: list[object] = []
    held: int | None = None
    for seq in seqs:
        verdict = validator.check(seq)
        if verdict in (CONTINUED, RESTARTED):
            assert held is not None
            both = (validator.check(held), validator.check(seq))
            out.append(("continued" if verdict == CONTINUED else "restarted", *both))
            held = None
            continue
        if verdict == HOLD:
            held = seq
        out.append(NAMES.get(verdict, verdict))
    return out


START = ["hold", ("restarted", S + 10, S + 11)]  # 10, 11: a new source needs two in sequence
START_5000 = ["hold", ("restarted", S + 5000, S + 5001)]


@pytest.mark.parametrize(
    ("seqs", "expected"),
    [
        ([10], ["hold"]),
        ([10, 11, 12, 13], [*START, S + 12, S + 13]),
        ([10, 12], ["hold", "hold"]),  # not in sequence: still nothing valid
        ([10, 11, 11], [*START, "drop"]),  # duplicate of the highest
        ([10, 11, 12, 11], [*START, S + 12, "drop"]),  # duplicate behind it
        ([10, 11, 13, 12, 12], [*START, S + 13, S + 12, "drop"]),  # reordered, then duplicated
        ([10, 11, 11 + MAX_GAP], [*START, S + 11 + MAX_GAP]),  # a small gap: taken at once
        # a larger gap waits for its successor, then continues the numbering
        (
            [10, 11, 12 + MAX_GAP, 13 + MAX_GAP, 12],
            [*START, "hold", ("continued", S + 12 + MAX_GAP, S + 13 + MAX_GAP), S + 12],
        ),
        ([10, 11, 500, 12, 13], [*START, "hold", S + 12, S + 13]),  # a jump nothing confirms
        ([10, 11, 500, 12, 501], [*START, "hold", S + 12, ("continued", S + 500, S + 501)]),
        ([10, 11, 500, 700, 501], [*START, "hold", "hold", "hold"]),  # a new jump replaces it
        # MAX_DROPOUT (3000) forward or more: the source restarted, numbered from two cycles on
        (
            [10, 11, 11 + MAX_DROPOUT, 12 + MAX_DROPOUT],
            [*START, "hold", ("restarted", 3 * S + 11 + MAX_DROPOUT, 3 * S + 12 + MAX_DROPOUT)],
        ),
        (
            [10, 11, 10 + MAX_DROPOUT, 11 + MAX_DROPOUT],
            [*START, "hold", ("continued", S + 10 + MAX_DROPOUT, S + 11 + MAX_DROPOUT)],
        ),
        # backwards beyond the window: a restart too
        ([5000, 5001, 10, 11], [*START_5000, "hold", ("restarted", 3 * S + 10, 3 * S + 11)]),
        # wrap-around, in order and reordered across it
        ([65534, 65535, 0, 1], ["hold", ("restarted", S + 65534, S + 65535), 2 * S, 2 * S + 1]),
        ([65534, 65535, 1, 0], ["hold", ("restarted", S + 65534, S + 65535), 2 * S + 1, 2 * S]),
        # behind the first packet: never skipped, so not taken
        ([10, 11, 9], [*START, "drop"]),
        # a duplicate of the held packet is still only held
        ([10, 11, 500, 500, 501], [*START, "hold", "hold", ("continued", S + 500, S + 501)]),
    ],
)
def test_packets_in_sequence(seqs: list[int], expected: list[object]) -> None:
    assert feed(SequenceValidator(128), seqs) == expected


@pytest.mark.parametrize(
    ("back", "window", "taken"),
    [(1, 128, True), (128, 128, True), (129, 128, False), (512, 512, True), (513, 512, False)],
)
def test_late_packets_are_taken_within_the_window(back: int, window: int, taken: bool) -> None:
    validator = SequenceValidator(window)
    highest = 1000 + window + 20
    late = highest - back
    assert feed(validator, [s for s in range(1000, highest + 1) if s != late])[2:] == [
        S + s for s in range(1002, highest + 1) if s != late
    ]
    assert validator.check(late) == (S + late if taken else HOLD)


@pytest.mark.parametrize(
    ("resent", "expected"),
    [
        (695, S + 695),  # missing: taken
        (694, DROP),  # received already
        (700, DROP),  # the highest
        (701, DROP),  # ahead: a NACK never asks for it
        (188, S + 188),  # missing, as far back as the window goes (512)
        (187, DROP),  # missing, beyond it
        (95, DROP),  # from before the source started
        (40000, DROP),  # garbage
    ],
)
def test_retransmissions_are_taken_only_when_missing(resent: int, expected: int) -> None:
    validator = SequenceValidator(512)
    feed(validator, [s for s in range(100, 701) if s not in (187, 188, 695)])
    assert validator.check_retransmission(resent) == expected
    if expected > 0:
        assert validator.check_retransmission(resent) == DROP  # only once
        assert validator.check(resent) == DROP


def test_retransmission_before_the_source_is_valid_is_dropped() -> None:
    validator = SequenceValidator(512)
    assert validator.check_retransmission(5) == DROP
    assert validator.check(5) == HOLD
    assert validator.check_retransmission(5) == DROP


def test_restart_reports_where_the_old_numbers_ended() -> None:
    validator = SequenceValidator(128)
    feed(validator, [10, 11, 12])
    assert validator.previous_highest == -1  # the start is a restart from nothing
    feed(validator, [40000, 40001])
    assert validator.previous_highest == S + 12
    assert validator.highest == 3 * S + 40001


def test_random_garbage_interleaved_with_a_stream_rarely_passes() -> None:
    """3,000 random sequence numbers among a stream's own: the stream keeps its numbers."""
    rng = random.Random(3)
    validator = SequenceValidator(512)
    feed(validator, [1000, 1001])
    taken_garbage = 0
    legit_refused = 0
    seq = 1001
    for _ in range(3000):
        seq = (seq + 1) & 0xFFFF
        garbage = rng.getrandbits(16)
        if validator.check(garbage) >= 0:
            taken_garbage += 1
        result = validator.check(seq)
        if result < 0:
            legit_refused += 1  # only a number garbage took first
    # a random number continues the stream with probability MAX_GAP / 65536: ~0.7 expected
    assert taken_garbage <= 5
    assert legit_refused <= taken_garbage
    assert validator.highest & 0xFFFF == seq


@pytest.mark.parametrize("window", [64, 99])
def test_window_is_at_least_max_misorder(window: int) -> None:
    with pytest.raises(ValueError, match="below 100"):
        SequenceValidator(window)


def test_holes_beyond_the_window_are_forgotten() -> None:
    """A lossy stream keeps at most window + 64 holes, however long it runs."""
    validator = SequenceValidator(128)
    feed(validator, [0, 1])
    for seq in range(2, 60000, 2):  # every other packet lost
        assert validator.check(seq) == S + seq
        assert len(validator._holes) <= 128 + 64
    assert validator.check_retransmission(59998 - 127) == S + 59998 - 127
    assert validator.check_retransmission(59998 - 129) == DROP
