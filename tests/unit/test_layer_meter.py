from __future__ import annotations

import pytest

from sfu.media.layer_meter import Layer, LayerMeter, LayerRanking

# --- the meter: a tick hands it running totals ---

# a step: (now, bytes total, packets total, expected bitrate in bit/s or None, expected active)
Step = tuple[float, int, int, float | None, bool]


def steady(times: list[float], byte_rate: float, packet_rate: float) -> list[Step]:
    """A layer sending at a constant rate, sampled at the given (possibly jittery) times."""
    return [
        (
            t,
            round(byte_rate * t),
            round(packet_rate * t),
            byte_rate * 8 if t >= 0.1 else None,
            t > 0,
        )
        for t in times
    ]


def frames(times: list[float], fps: float, frame_bytes: int) -> list[Step]:
    """A low frame rate layer: the totals move in steps of one frame (2 packets)."""
    steps: list[Step] = []
    for t in times:
        count = int(t * fps) + 1  # a frame at t = 0, 1/fps, ...
        steps.append((t, count * frame_bytes, 2 * count, None, True))
    return steps


JITTERY = [0.0, 0.31, 0.45, 0.8, 1.02, 1.4, 1.52, 1.93, 2.2, 2.26, 2.75, 3.5, 3.6]

METER: dict[str, tuple[list[Step], str]] = {
    "nothing received: inactive, no rate": (
        [(0.0, 0, 0, 0.0, False), (0.25, 0, 0, 0.0, False), (5.0, 0, 0, 0.0, False)],
        "a layer that never sent is not a layer to choose",
    ),
    "the first sample with packets: active, rate not known yet": (
        [(0.0, 1200, 1, 0.0, True)],
        "one sample has no time span to divide by",
    ),
    "regular ticks: the rate of the last second": (
        steady([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5], 100_000, 100),
        "800 kbit/s whatever the span",
    ),
    "jittery ticks: the span follows the samples, the rate stays exact": (
        steady(JITTERY, 100_000, 100),
        "a late tick brings more bytes over a longer span",
    ),
    "a tick delayed 2 s (a blocked loop) does not make a spike or a stop": (
        steady([0.0, 0.25, 0.5, 2.5, 2.75], 50_000, 50),
        "the bytes of 2 s over 2 s; packets arrived, so active",
    ),
    "counter stops: active for INACTIVE_AFTER, then not; the rate it had is kept": (
        [
            *steady([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0], 100_000, 100),
            (2.25, 200_000, 200, 800_000.0, True),
            (2.5, 200_000, 200, 800_000.0, True),
            (2.75, 200_000, 200, 800_000.0, True),
            (3.0, 200_000, 200, 800_000.0, False),
            (9.0, 200_000, 200, 800_000.0, False),
        ],
        "what the layer costs when it comes back, and its rank, survive the stop",
    ),
    "sending again after a stop: rated over the sending time only": (
        [
            *steady([0.0, 0.25, 0.5, 0.75, 1.0], 100_000, 100),
            (3.0, 100_000, 100, 800_000.0, False),
            (3.25, 100_000, 100, 800_000.0, False),
            (3.5, 105_000, 110, 160_000.0, True),  # 5 kB in the 0.25 s since 3.25
            (3.75, 110_000, 120, 160_000.0, True),
        ],
        "the idle second before the restart would make the layer look cheaper than it is",
    ),
    "counters restart (a new receiver): a new history, never a negative rate": (
        [
            *steady([0.0, 0.25, 0.5, 0.75, 1.0], 100_000, 100),
            (1.25, 1000, 2, 800_000.0, True),
            (1.5, 26_000, 27, 800_000.0, True),
        ],
        "25 kB over 0.25 s since the restart",
    ),
}


@pytest.mark.parametrize("name", METER)
def test_meter(name: str) -> None:
    steps, _why = METER[name]
    meter = LayerMeter()
    for now, total_bytes, total_packets, bitrate, active in steps:
        meter.sample(total_bytes, total_packets, now)
        assert meter.active is active, (name, now)
        if bitrate is not None:
            assert meter.bitrate == pytest.approx(bitrate), (name, now)


def test_meter_keeps_a_7fps_layer_active() -> None:
    """7 fps with 0.25 s ticks: some ticks see no frame, none sees a gap near INACTIVE_AFTER."""
    meter = LayerMeter()
    times = [i * 0.25 + (0.05 if i % 3 == 1 else 0.0) for i in range(40)]  # jittery too
    for now, total_bytes, total_packets, _, _ in frames(times, 7.0, 1500):
        meter.sample(total_bytes, total_packets, now)
        assert meter.active, now
        if now >= 1.0:  # 7 +- 1 frames a second
            assert 6 * 1500 * 8 <= meter.bitrate <= 8 * 1500 * 8 * 1.3, now


def test_frame_size_from_keyframes() -> None:
    meter = LayerMeter()
    assert meter.layer("h") == Layer("h", 0.0, False, None, None)
    meter.on_frame_size(640, 360)
    meter.sample(1000, 1, 0.0)
    meter.sample(26_000, 21, 0.25)
    assert meter.layer("h") == Layer("h", 800_000.0, True, 640, 360)
    meter.on_frame_size(480, 270)  # the encoder scaled down
    assert (meter.layer("h").width, meter.layer("h").height) == (480, 270)


# --- ranking ---


def L(rid: str, bitrate: float, size: tuple[int, int] | None = None, active: bool = True) -> Layer:
    return Layer(rid, bitrate, active, *(size or (None, None)))


Q, H, F = (320, 180), (640, 360), (1280, 720)

# each row: the successive inputs of one track's ranking, the rid order expected after each, why
RANKING: dict[str, tuple[list[tuple[list[Layer], str]], str]] = {
    "by resolution, whatever the rid names and order": (
        [([L("f", 1.5e6, F), L("q", 150e3, Q), L("h", 500e3, H)], "qhf")],
        "Chromium lists q,h,f; others list the largest first",
    ),
    "numeric rids, largest first (Firefox style)": (
        [([L("0", 1.5e6, F), L("1", 500e3, H), L("2", 150e3, Q)], "210")],
        "the rid says nothing about the size",
    ),
    "resolution beats bitrate": (
        [([L("a", 900e3, H), L("b", 800e3, F)], "ab")],
        "a larger picture is the larger layer even when it costs less this second",
    ),
    "equal resolutions: by bitrate": (
        [([L("a", 900e3, H), L("b", 300e3, H)], "ba")],
        "same size, fewer bits: the smaller layer",
    ),
    "unknown resolution: by bitrate": (
        [([L("x", 1.5e6), L("y", 150e3), L("z", 500e3)], "yzx")],
        "H264 before its SPS is parsed",
    ),
    "some resolutions unknown: all by bitrate": (
        [([L("x", 1.5e6, F), L("y", 150e3), L("z", 500e3, H)], "yzx")],
        "known and unknown sizes cannot be compared",
    ),
    "bitrate noise does not swap close layers": (
        [
            ([L("a", 500e3), L("b", 520e3)], "ab"),
            ([L("a", 530e3), L("b", 490e3)], "ab"),
            ([L("a", 560e3), L("b", 400e3)], "ab"),
            ([L("a", 480e3), L("b", 540e3)], "ab"),
        ],
        "within RANK_MARGIN the rank keeps the bitrate it had",
    ),
    "noise on equal resolutions neither": (
        [
            ([L("a", 500e3, H), L("b", 520e3, H)], "ab"),
            ([L("a", 530e3, H), L("b", 490e3, H)], "ab"),
        ],
        "same as unknown sizes",
    ),
    "a clear change reorders": (
        [
            ([L("a", 500e3), L("b", 520e3)], "ab"),
            ([L("a", 900e3), L("b", 520e3)], "ba"),
        ],
        "900 > 1.5 x 500: the rank follows",
    ),
    "a stopped layer keeps its place": (
        [
            ([L("x", 1.5e6), L("y", 150e3), L("z", 500e3)], "yzx"),
            ([L("x", 1.5e6, active=False), L("y", 150e3), L("z", 500e3)], "yzx"),
        ],
        "the meter keeps a stopped layer's rate, the ranking ignores activity",
    ),
    "a new layer takes its place": (
        [
            ([L("y", 150e3), L("x", 1.5e6)], "yx"),
            ([L("y", 150e3), L("x", 1.5e6), L("z", 500e3)], "yzx"),
        ],
        "a layer latched late",
    ),
}


@pytest.mark.parametrize("name", RANKING)
def test_ranking(name: str) -> None:
    steps, _why = RANKING[name]
    ranking = LayerRanking()
    for layers, expected in steps:
        assert "".join(layer.rid for layer in ranking.rank(layers)) == expected, name
