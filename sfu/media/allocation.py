"""Which layer of each video track every subscriber receives, and which a publisher must send.

Both run on the connections' periodic tick, never per packet:

- publisher side, per simulcast track (:class:`PublisherSide`): sample each layer's counters
  (:class:`~sfu.media.layer_meter.LayerMeter`), rank the layers by measured size, and from what
  its subscribers chose work out which layers somebody needs (``PublisherLayers``);
- subscriber side, per connection (:class:`SubscriberAllocation`): the subscriber's settings,
  the ranked layers and a budget (from :mod:`sfu.media.bandwidth`) go through its
  :class:`~sfu.media.layer_selector.LayerSelector`, and each down-track is pointed at its target
  layer (it switches at that layer's keyframe), or paused when not even its lowest layer fits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sfu.api import LayerActivity, TrackSettings
from sfu.media.downtrack import DownTrack
from sfu.media.layer import LayerReceiver
from sfu.media.layer_meter import Layer, LayerMeter, LayerRanking
from sfu.media.layer_selector import (
    LayerSelector,
    LayerTarget,
    VideoTrackDemand,
    WantedLayers,
    wanted_layers,
)
from sfu.media.receiver import TrackReceiver

#: The rid a track without simulcast goes by in the selector: its one stream.
SINGLE = ""

#: A budget under this fraction of what the layers cost at the last run is a link that fell far
#: below them (a step down, measured): the layers left stop at once instead of at their
#: successors' keyframes — the bottleneck drops most of what they send and queues the rest
#: ahead of the new keyframe. Above it (an estimate sawing 15 % down, a probe that overshot)
#: they go on until then: the link still carries most of them, and a cut would freeze the
#: picture for the keyframe's round trip.
CUT_BELOW = 0.5
#: the settings of a track the operator muted, whatever its subscriber asked for
BLOCKED = TrackSettings(paused=True)


def rid_of(layer: LayerReceiver) -> str:
    return SINGLE if layer.rid is None else layer.rid


class PublisherSide:
    """Measurements and wanted layers of one published video track."""

    __slots__ = ("_meters", "_ranking", "_wanted", "inactive", "ranked", "track")

    def __init__(self, track: TrackReceiver) -> None:
        self.track = track
        self._meters = {layer: LayerMeter() for layer in track.layers}
        self._ranking = LayerRanking()
        self._wanted = WantedLayers()
        #: the layers smallest first, as of the last tick
        self.ranked: tuple[Layer, ...] = tuple(
            Layer(rid_of(layer), width=None, height=None) for layer in track.layers
        )
        #: the rids the publisher was last told to stop sending (for /metrics)
        self.inactive: frozenset[str] = frozenset()

    def sample(self, now: float) -> None:
        layers = []
        for layer, meter in self._meters.items():
            meter.sample(layer.bytes_received, layer.packets_received, now)
            if layer.frame_size is not None:
                meter.on_frame_size(*layer.frame_size)
            layers.append(meter.layer(rid_of(layer)))
        self.ranked = self._ranking.rank(layers)

    def activity(self, now: float) -> tuple[LayerActivity, ...] | None:
        """The layers' activity for the publisher if it changed (simulcast only), else None.

        A layer is wanted when a subscriber forwards it, switches to it or would take it, and
        so is every smaller one: a subscriber's estimate may fall at any time, and a layer that
        must first be turned back on costs it a round trip and a keyframe.
        """
        track = self.track
        if not track.simulcast:
            return None
        chosen = wanted_layers(
            (d.choice for d in track.down_tracks if d.choice is not None),
            (None if d.layer is None else d.layer.rid for d in track.down_tracks),
        )
        ranks = [layer.rid for layer in self.ranked]
        top = max((ranks.index(rid) for rid in chosen if rid in ranks), default=-1)
        wanted = set(ranks[: top + 1])
        activity = self._wanted.update(track.params.rids, wanted, now)
        if activity is not None:
            self.inactive = frozenset(a.rid for a in activity if not a.active)
        return activity


@dataclass(frozen=True, slots=True)
class Allocation:
    """What one run of a subscriber's allocation settled (rates in bit/s, video only)."""

    allocated: float = 0.0
    #: a budget that would allow the next step up (what to probe for), None: nothing held back
    wanted: float | None = None
    #: track ids paused because not even their lowest layer fits
    paused: frozenset[str] = frozenset()
    #: some track is held below what the subscriber's settings allow
    limited: bool = False


class SubscriberAllocation:
    """The layer choices of one subscriber connection."""

    __slots__ = ("_levels", "_selector", "_settings", "downgrades", "last", "upgrades")

    def __init__(self, settings: Callable[[str], TrackSettings]) -> None:
        self._selector = LayerSelector()
        self._settings = settings
        self._levels: dict[str, tuple[int, TrackSettings]] = {}  # -1: paused for bandwidth
        self.last = Allocation()
        #: layer changes the budget made (not the subscriber's settings), for /metrics
        self.upgrades = 0
        self.downgrades = 0

    def run(
        self,
        down_tracks: Iterable[DownTrack],
        now: float,
        budget: float | None,
        *,
        may_pause: bool = True,
    ) -> Allocation:
        demands: list[VideoTrackDemand] = []
        by_track: dict[str, DownTrack] = {}
        layers_of: dict[str, tuple[Layer, ...]] = {}
        settings_of: dict[str, TrackSettings] = {}
        for down_track in down_tracks:
            track = down_track.source
            side = track.publisher_side
            if side is None or track.closed or down_track.closed:
                continue  # audio: always forwarded
            track_id = track.info.track_id
            # a track the operator muted is paused for everyone
            settings_of[track_id] = BLOCKED if track.blocked else self._settings(track_id)
            by_track[track_id] = down_track
            layers_of[track_id] = side.ranked
            current = down_track.target or down_track.layer
            demands.append(
                VideoTrackDemand(
                    track_id,
                    side.ranked,
                    settings_of[track_id],
                    track.info.source,
                    None if current is None else rid_of(current),
                )
            )
        selector = self._selector
        cut = budget is not None and budget < CUT_BELOW * self.last.allocated
        targets = selector.select(demands, budget, now, may_pause=may_pause)
        levels: dict[str, tuple[int, TrackSettings]] = {}
        for track_id, target in targets.items():
            settings = settings_of[track_id]
            level = -1 if target.paused else (target.spatial or 0)
            before = self._levels.get(track_id)
            if budget is not None and before is not None and before[1] == settings:
                self.upgrades += level > before[0]
                self.downgrades += level < before[0]
            levels[track_id] = (level, settings)
            down_track = by_track[track_id]
            down_track.choice = target
            # the most this track could have on this link with the others' layers as chosen: what
            # its publisher need not exceed for this subscriber (a receiver-driven ceiling)
            if budget is None:
                down_track.allowance = None
            else:
                own = 0.0
                if target.spatial is not None and not target.paused:
                    own = layers_of[track_id][target.spatial].bitrate
                down_track.allowance = max(budget - selector.allocated + own, 0.0)
            track = down_track.source
            if target.paused:
                down_track.set_layer(None, now)
            elif target.rid is not None:
                layer = track.layers[0] if target.rid == SINGLE else track.layer(target.rid)
                if layer is not None:
                    at_once = cut and _down_for_budget(down_track, target)
                    down_track.set_layer(layer, now, at_once=at_once)
                down_track.set_temporal_layer(target.temporal)
        self._levels = levels
        self.last = Allocation(
            selector.allocated,
            selector.wanted,
            frozenset(t for t, target in targets.items() if target.starved and target.paused),
            any(target.limited for target in targets.values()),
        )
        return self.last


def _down_for_budget(down_track: DownTrack, target: LayerTarget) -> bool:
    """Whether ``target`` moves the down-track to a smaller layer than it forwards because its
    budget fell (not because its subscriber asked)."""
    current = down_track.layer
    side = down_track.source.publisher_side
    if not target.limited or current is None or side is None or target.rid is None:
        return False
    ranks = [layer.rid for layer in side.ranked]
    rid = rid_of(current)
    return rid in ranks and target.rid in ranks and ranks.index(target.rid) < ranks.index(rid)
