from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from sfu.api import LayerActivity, TrackSettings
from sfu.media.layer_meter import Layer
from sfu.media.layer_selector import (
    LayerSelector,
    LayerTarget,
    VideoTrackDemand,
    WantedLayers,
    wanted_layers,
)

# A camera: q 320x180 150 kbit/s, h 640x360 500 kbit/s, f 1280x720 1.5 Mbit/s (ranked).
CAMERA = (
    Layer("q", 150e3, True, 320, 180),
    Layer("h", 500e3, True, 640, 360),
    Layer("f", 1.5e6, True, 1280, 720),
)
# A screen share: sl 960x540 400 kbit/s, sh 1920x1080 1.2 Mbit/s.
SCREEN = (Layer("sl", 400e3, True, 960, 540), Layer("sh", 1.2e6, True, 1920, 1080))


def track(
    track_id: str = "cam",
    *,
    layers: tuple[Layer, ...] = CAMERA,
    stopped: str = "",
    source: str = "camera",
    current: str | None = None,
    temporal_layers: int | None = None,
    **settings: Any,
) -> VideoTrackDemand:
    """A demand; ``stopped``: the rids (one letter each, or comma separated) not arriving."""
    gone = set(stopped.split(",")) if "," in stopped else set(stopped)
    layers = tuple(replace(layer, active=layer.rid not in gone) for layer in layers)
    return VideoTrackDemand(
        track_id,
        layers,
        TrackSettings(**settings),
        source,
        current,
        temporal_layers,
    )


def screen(track_id: str = "screen", **settings: Any) -> VideoTrackDemand:
    return track(track_id, layers=SCREEN, source="screen", **settings)


def outcome(target: LayerTarget) -> str:
    """'h', 'h t0' (temporal cap), 'h want f' (desired layer not arriving), 'starved' (paused:
    not even the lowest layer fits), 'paused', 'none'."""
    if target.paused:
        return "starved" if target.starved else "paused"
    if target.rid is None:
        return "none"
    words = [target.rid]
    if target.temporal is not None:
        words.append(f"t{target.temporal}")
    if target.desired_rid != target.rid:
        words.append(f"want {target.desired_rid}")
    if target.starved:
        words.append("starved")
    return " ".join(words)


# a step: (now, tracks, budget in bit/s or None, expected outcome per track id)
Step = tuple[float, list[VideoTrackDemand], float | None, dict[str, str]]

# Each scenario runs its steps through one selector, in order: (steps, why).
SELECTOR: dict[str, tuple[list[Step], str]] = {
    # --- preferences ---
    "no preferences, no budget: the top layer": (
        [(0, [track()], None, {"cam": "f"})],
        "version 1 clients get the best layer",
    ),
    "max_layer caps": (
        [
            (0, [track(max_layer=1)], None, {"cam": "h"}),
            (1, [track(max_layer=0)], None, {"cam": "q"}),
            (2, [track(max_layer=7)], None, {"cam": "f"}),
            (3, [track(max_layer=-1)], None, {"cam": "q"}),
        ],
        "an index past the end is the top; below 0 is the bottom",
    ),
    "max_width / max_height: the smallest layer at least that large": (
        [
            (0, [track(max_width=300)], None, {"cam": "q"}),
            (1, [track(max_width=320)], None, {"cam": "q"}),
            (2, [track(max_width=321)], None, {"cam": "h"}),
            (3, [track(max_height=200)], None, {"cam": "h"}),
            (4, [track(max_width=700)], None, {"cam": "f"}),
            (5, [track(max_width=4000)], None, {"cam": "f"}),
            (6, [track(max_width=600, max_height=400)], None, {"cam": "f"}),
            (7, [track(max_width=700, max_layer=0)], None, {"cam": "q"}),
        ],
        "a tile of that size; larger than every layer: the largest; both limits hold together; "
        "the tighter of max_layer and size wins",
    ),
    "size cap with resolutions not known: no cap": (
        [
            (
                0,
                [
                    track(
                        layers=tuple(replace(x, width=None, height=None) for x in CAMERA),
                        max_width=300,
                    )
                ],
                None,
                {"cam": "f"},
            )
        ],
        "H264 before its SPS is parsed: better too large than too small",
    ),
    "paused": (
        [
            (0, [track(paused=True)], None, {"cam": "paused"}),
            (1, [track(paused=True), track("b")], 200e3, {"cam": "paused", "b": "q"}),
        ],
        "nothing forwarded, no budget used: the other track is not starved",
    ),
    "no layer received yet": (
        [(0, [track(layers=())], None, {"cam": "none"})],
        "nothing to forward until a layer arrives",
    ),
    "temporal cap": (
        [
            (0, [track(max_temporal_layer=0, temporal_layers=3)], None, {"cam": "f t0"}),
            (1, [track(max_temporal_layer=2, temporal_layers=3)], None, {"cam": "f"}),
            (2, [track(max_temporal_layer=1)], None, {"cam": "f t1"}),
            (3, [track(temporal_layers=3)], None, {"cam": "f"}),
        ],
        "a cap at or above the top temporal layer drops nothing; unknown count: cap passed on",
    ),
    # --- layers that stop arriving ---
    "inactive fallback and climb back": (
        [
            (0, [track()], None, {"cam": "f"}),
            (1, [track(stopped="f")], None, {"cam": "h want f"}),
            (2, [track(stopped="fh")], None, {"cam": "q want f"}),
            (3, [track(stopped="q")], None, {"cam": "f"}),
        ],
        "the best layer still arriving, back at once when it returns (no hold)",
    ),
    "inactive: none below, the lowest above": (
        [(0, [track(max_layer=0, stopped="q")], None, {"cam": "h want q"})],
        "a larger picture beats none",
    ),
    "nothing arrives: stay on the previous target": (
        [
            (0, [track(max_layer=1)], None, {"cam": "h"}),
            (1, [track(max_layer=1, stopped="qhf")], None, {"cam": "h"}),
            (2, [track(max_layer=1)], None, {"cam": "h"}),
        ],
        "the publisher's link broke: nothing to move to, nothing to move back",
    ),
    "nothing arrives for a new subscriber: the current layer": (
        [(0, [track(stopped="qhf", current="q")], None, {"cam": "q want f"})],
        "the down-track is already waiting there",
    ),
    "a stopped layer keeps its cost in the budget": (
        [
            (0, [track()], 2e6, {"cam": "f"}),
            (1, [track(stopped="f")], 2e6, {"cam": "h want f"}),
            (2, [track(stopped="f"), track("b")], 2e6, {"cam": "h want f", "b": "q"}),
            (3, [track(), track("b")], 2e6, {"cam": "f", "b": "q"}),
        ],
        "b may not take what f needs when it returns; f comes back without a downgrade of b",
    ),
    # --- budget ---
    "budget shared: screen first, then cameras round-robin": (
        [(0, [track("a"), track("b"), screen()], 2.5e6, {"screen": "sh", "a": "h", "b": "q"})],
        "floors 700k; sh: 1.5M x1.2 fits; a->h: 1.85M x1.2 fits; b->h: 2.2M x1.2 > 2.5M",
    ),
    "budget shared: both cameras up one before either goes up two": (
        [(0, [track("a"), track("b"), screen()], 3e6, {"screen": "sh", "a": "h", "b": "h"})],
        "a->f would need 3.2M; round-robin, not first come first served",
    ),
    "budget shared: tight": (
        [(0, [track("a"), track("b"), screen()], 1e6, {"screen": "sl", "a": "q", "b": "q"})],
        "every lowest layer fits (700k), no upgrade does",
    ),
    "a new screen share takes from cameras": (
        [
            (0, [track("a"), track("b")], 2.5e6, {"a": "f", "b": "h"}),
            (1, [track("a"), track("b"), screen()], 2.5e6, {"screen": "sh", "a": "h", "b": "h"}),
        ],
        "priority beats keeping what a camera had: a goes from f to h",
    ),
    "a new camera does not take from another camera": (
        [
            (0, [track("a")], 2.1e6, {"a": "f"}),
            (1, [track("a"), track("b")], 2.1e6, {"a": "f", "b": "q"}),
        ],
        "keeping a's layer comes before b's upgrade, or they would swap on every new subscription",
    ),
    "starved: paused rather than squeezed in, once it lasts": (
        [
            (0, [track()], 100e3, {"cam": "q starved"}),
            (1.9, [track()], 100e3, {"cam": "q starved"}),
            (2, [track()], 100e3, {"cam": "starved"}),
            (
                3,
                [track(), track("b"), screen()],
                500e3,
                {"screen": "sl", "cam": "starved", "b": "q starved"},
            ),
            (
                5,
                [track(), track("b"), screen()],
                500e3,
                {"screen": "sl", "cam": "starved", "b": "starved"},
            ),
        ],
        "forwarded for PAUSE_AFTER (a GCC dip recovers), then paused; the screen's lowest fits, "
        "served first; neither camera's fits in what is left",
    ),
    "starved: a dip shorter than PAUSE_AFTER pauses nothing": (
        [
            (0, [track()], 100e3, {"cam": "q starved"}),
            (1.5, [track()], 200e3, {"cam": "q"}),
            (2.5, [track()], 100e3, {"cam": "q starved"}),
            (4, [track()], 100e3, {"cam": "q starved"}),
            (4.5, [track()], 100e3, {"cam": "starved"}),
        ],
        "the time it lacks starts again after it fitted",
    ),
    "starved: a track that does not fit leaves room for the next": (
        [
            (0, [screen(), track()], 300e3, {"screen": "sl starved", "cam": "q starved"}),
            (2, [screen(), track()], 300e3, {"screen": "starved", "cam": "q"}),
        ],
        "the screen's 400k cannot fit; the camera's 150k can, once the screen is paused",
    ),
    "starved: resumes as an upgrade would, with the margin, after the hold": (
        [
            (0, [track()], 1e6, {"cam": "h"}),
            (1, [track()], 100e3, {"cam": "q starved"}),
            (3, [track()], 100e3, {"cam": "starved"}),
            (4, [track()], 170e3, {"cam": "starved"}),
            (5, [track()], 200e3, {"cam": "starved"}),
            (7, [track()], 170e3, {"cam": "starved"}),
            (7.1, [track()], 200e3, {"cam": "q"}),
            (8, [track()], 160e3, {"cam": "q"}),
        ],
        "150k x1.2 = 180k to resume; the hold of 4 s after the pause at 3; 160k keeps it",
    ),
    "upgrade margin, downgrade at once, hold after it": (
        [
            (0, [track()], 1e6, {"cam": "h"}),
            (1, [track()], 1.6e6, {"cam": "h"}),
            (2, [track()], 1.8e6, {"cam": "f"}),
            (3, [track()], 1.6e6, {"cam": "f"}),
            (4, [track()], 1.4e6, {"cam": "h"}),
            (5, [track()], 3e6, {"cam": "h"}),
            (7.9, [track()], 3e6, {"cam": "h"}),
            (8, [track()], 3e6, {"cam": "f"}),
        ],
        "f needs 1.8M to go up, 1.5M to stay; down at 1.4M at once; no upgrade for 4 s after",
    ),
    "the first budget is a starting guess, not a fall: no hold": (
        [
            (0, [track()], None, {"cam": "f"}),
            (0.2, [track()], 1e6, {"cam": "h"}),
            (1, [track()], 1.8e6, {"cam": "f"}),
            (2, [track()], 1e6, {"cam": "h"}),
            (3, [track()], 3e6, {"cam": "h"}),
        ],
        "no estimate yet: all it asks for; the estimator's first guess takes f away without a "
        "hold, so its probes bring f back at once; a later fall holds",
    ),
    "a downgrade of two layers at once": (
        [
            (0, [track()], 3e6, {"cam": "f"}),
            (1, [track()], 300e3, {"cam": "q"}),
        ],
        "no stepping down through h",
    ),
    "a downgrade for preferences sets no hold": (
        [
            (0, [track()], 3e6, {"cam": "f"}),
            (1, [track(max_layer=0)], 3e6, {"cam": "q"}),
            (2, [track(max_layer=2)], 3e6, {"cam": "f"}),
        ],
        "the subscriber asked both times",
    ),
    "a preference change applies during the hold": (
        [
            (0, [track()], 3e6, {"cam": "f"}),
            (1, [track()], 1e6, {"cam": "h"}),
            (2, [track(max_width=100)], 3e6, {"cam": "q"}),
            (3, [track(max_width=1280)], 3e6, {"cam": "f"}),
            (4, [track(max_layer=1), track("b")], 1e6, {"cam": "h", "b": "q"}),
        ],
        "larger tile: up at once (within the margin); a new track too, it is the subscriber asking",
    ),
    "a layer returning during the hold comes back at once": (
        [
            (0, [track()], 3e6, {"cam": "f"}),
            (1, [track()], 1e6, {"cam": "h"}),
            (2, [track(stopped="h")], 1e6, {"cam": "q want h"}),
            (3, [track()], 1e6, {"cam": "h"}),
        ],
        "h was never given up: no upgrade, no hold",
    ),
    "a new subscriber's current layer needs no margin to stay": (
        [(0, [track(current="f")], 1.6e6, {"cam": "f"})],
        "the down-track forwards f already; 1.5M fits",
    ),
    "without a current layer it does": (
        [(0, [track()], 1.6e6, {"cam": "h"})],
        "going up to f needs 1.8M",
    ),
    "a layer growing past the budget goes down at once": (
        [
            (0, [track()], 2e6, {"cam": "f"}),
            (
                1,
                [track(layers=(*CAMERA[:2], replace(CAMERA[2], bitrate=2.2e6)))],
                2e6,
                {"cam": "h"},
            ),
        ],
        "the publisher ramped f up: it no longer fits",
    ),
}


def test_allocated_rate_and_limited_tracks() -> None:
    selector = LayerSelector()
    got = selector.select([track("a"), track("b", max_layer=0), screen()], 2.5e6, 0)
    assert selector.allocated == 1.2e6 + 500e3 + 150e3
    assert {k: t.limited for k, t in got.items()} == {"screen": False, "a": True, "b": False}
    assert selector.wanted == pytest.approx((1.85e6 + 1e6) * 1.2)  # a: h -> f
    got = selector.select([track("a")], None, 1)
    assert selector.allocated == 1.5e6 and not got["a"].limited and selector.wanted is None
    got = selector.select([track("a")], 100e3, 2)
    assert selector.allocated == 150e3 and got["a"].limited and got["a"].starved
    assert not got["a"].paused and selector.wanted == pytest.approx(150e3 * 1.2)
    got = selector.select([track("a")], 100e3, 4)
    assert selector.allocated == 0 and got["a"].paused and got["a"].starved
    assert selector.wanted == pytest.approx(150e3 * 1.2)  # to resume
    selector.select([track("a", max_layer=1)], 3e6, 3)
    assert selector.wanted is None  # all it asks for


def test_starved_tracks_forwarded_where_the_selector_may_not_pause() -> None:
    """A guessed budget (a new subscriber's) or one probes cannot lift (REMB): the lowest layer
    goes anyway, flagged, and the budget it lacks is what to probe for."""
    selector = LayerSelector()
    got = selector.select([screen(), track()], 300e3, 0, may_pause=False)
    assert {k: outcome(t) for k, t in got.items()} == {"screen": "sl starved", "cam": "q starved"}
    assert selector.allocated == 550e3
    assert selector.wanted == pytest.approx(550e3 * 1.2)
    got = selector.select([screen(), track()], 300e3, 2, may_pause=True)
    assert {k: outcome(t) for k, t in got.items()} == {"screen": "starved", "cam": "q"}


@pytest.mark.parametrize("name", SELECTOR)
def test_selector(name: str) -> None:
    steps, _why = SELECTOR[name]
    selector = LayerSelector()
    for now, tracks, budget, expected in steps:
        got = selector.select(tracks, budget, now)
        assert {track_id: outcome(target) for track_id, target in got.items()} == expected, (
            name,
            now,
        )


def test_selector_indexes_are_ranks() -> None:
    got = LayerSelector().select([track(max_layer=1, stopped="h")], None, 0.0)["cam"]
    assert (got.spatial, got.rid, got.desired_rid) == (0, "q", "h")


# --- wanted layers ---


def test_wanted_layers_from_targets_and_currents() -> None:
    targets = [
        LayerTarget("cam", 0, "q", desired_rid="h"),  # h stopped: must come back
        LayerTarget("cam", paused=True),
        LayerTarget("cam"),
    ]
    assert wanted_layers(targets, ["f", None]) == {"q", "h", "f"}  # f: mid-switch down
    assert wanted_layers([], []) == set()


RIDS = ("q", "h", "f")
ALL = {"q", "h", "f"}


def told(*active: str) -> tuple[LayerActivity, ...]:
    return tuple(LayerActivity(rid, rid in active) for rid in RIDS)


# a step: (now, rids wanted, what update() returns)
Wants = tuple[float, set[str], tuple[LayerActivity, ...] | None]

WANTED: dict[str, tuple[list[Wants], str]] = {
    "all wanted: nothing to say": (
        [(0, ALL, None), (5, ALL, None)],
        "the publisher sends every encoding to begin with",
    ),
    "unwanted: off after the grace": (
        [
            (0, {"q", "h"}, None),
            (1.9, {"q", "h"}, None),
            (2.0, {"q", "h"}, told("q", "h")),
            (3, {"q", "h"}, None),
        ],
        "a subscriber in the middle of a switch does not stop a layer",
    ),
    "wanted again: on at once": (
        [(0, {"q"}, None), (2, {"q"}, told("q")), (2.25, {"q", "f"}, told("q", "f"))],
        "a subscriber waits for that layer",
    ),
    "a flicker restarts the grace": (
        [
            (0, {"q", "h"}, None),
            (1.5, ALL, None),
            (1.75, {"q", "h"}, None),
            (3.5, {"q", "h"}, None),
            (3.75, {"q", "h"}, told("q", "h")),
        ],
        "wanted in between: the 2 s count from when it became unwanted again",
    ),
    "nobody wants anything": (
        [(0, set(), None), (2, set(), told())],
        "whether to keep a layer on for a next subscriber is the caller's policy",
    ),
}


@pytest.mark.parametrize("name", WANTED)
def test_wanted_grace(name: str) -> None:
    steps, _why = WANTED[name]
    gate = WantedLayers(grace=2.0)  # the mechanism; the default is UNWANTED_GRACE
    for now, wanted, expected in steps:
        assert gate.update(RIDS, wanted, now) == expected, (name, now)


def test_wanted_layers_added_and_gone() -> None:
    gate = WantedLayers(grace=2.0)  # the mechanism; the default is UNWANTED_GRACE
    assert gate.update(("q", "h"), {"q"}, 0.0) is None
    assert gate.update(("q", "h"), {"q"}, 2.0) == (
        LayerActivity("q", True),
        LayerActivity("h", False),
    )
    # f latched late: active until unwanted for the grace; h gone: forgotten
    assert gate.update(("q", "f"), {"q"}, 2.5) is None
    assert gate.update(("q", "f"), {"q"}, 4.5) == (
        LayerActivity("q", True),
        LayerActivity("f", False),
    )
    # h back: a new layer, active again without a report
    assert gate.update(("q", "h"), {"q", "h"}, 5.0) is None
