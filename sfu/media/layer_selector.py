"""Which layer of each video track a subscriber gets, and which layers a publisher must send.

:class:`LayerSelector` is the seam the bandwidth estimator drives: per subscriber connection it
maps the subscriber's :class:`~sfu.api.TrackSettings`, the layers of each track (ranked by
:class:`~sfu.media.layer_meter.LayerRanking`, with measured bitrates and activity) and a budget
in bit/s to a target layer per track. It is pure and clock-injected: ``now`` is an argument.

Hysteresis (the field: ion-sfu moves up a layer when REMB >= 1.5x its bitrate and holds 3-10 s;
Galene moves up below 7/8 of the estimate and down above 3/2 of it):
- going down for budget is immediate: sending more than the link carries builds queues and loss;
- going up needs the total to fit :data:`UPGRADE_MARGIN` times over, and waits
  :data:`UPGRADE_HOLD` after a downgrade for budget;
- a track whose lowest layer does not fit is paused (``starved``) rather than squeezed in: the
  link would drop packets of everything, audio included; it resumes as an upgrade would. Only
  where the caller says the budget is measured (``may_pause``): a guess, or an estimate that
  cannot be probed back up, must not take a subscriber's only picture away;
- a preference change, a new track, a layer stopping or coming back apply at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field

from sfu.api import LayerActivity, TrackSettings
from sfu.media.layer_meter import Layer

#: Up only when the total after the upgrade, times this, fits the budget. A GCC-style estimate
#: (draft-ietf-rmcat-gcc §5.5) saws down by beta = 0.85 on overuse; 1.2 > 1 / 0.85 means one
#: such decrease right after an upgrade at the threshold still fits, so it does not undo it.
#: Between Galene's 8/7 and ion-sfu's 1.5.
UPGRADE_MARGIN = 1.2

#: Seconds after a downgrade for budget before anything on the connection goes up again. GCC
#: grows at most ~8 %/s, so going from 0.85x to 1.2x a layer's rate honestly takes ~4.5 s: an
#: estimate that gets there sooner is noise. Within ion-sfu's 3-10 s. The first budget after
#: unlimited ones sets none: it is the estimator's starting guess, not a fall, and its probes
#: lift it within a second or two.
UPGRADE_HOLD = 4.0

#: Seconds a layer must stay unwanted before the publisher is told to stop it. Restarting an
#: encoding costs more than that layer: libwebrtc re-creates its VP8 simulcast encoder, so every
#: layer pauses and restarts with a keyframe, and the new layer is dropped again while the
#: sender's allocation ramps up (seen in Chromium: subscribers of the other layers fell back,
#: and one switched to the restarted layer and away again within a second). Wants flicker for
#: seconds (a subscriber flipping tiles, a budget dip, a window resize, a reconnect): stop a
#: layer only when it has clearly gone out of use. Costs at most this long of an unused layer.
UNWANTED_GRACE = 10.0

#: Seconds a track's lowest layer must go on not fitting before it is paused: a GCC estimate
#: saws down by 15 % at every congestion event and recovers within seconds, and the pause (with
#: the hold and margin it needs to come back) costs the subscriber its picture far longer.
PAUSE_AFTER = 2.0

#: Allocation order of sources: lower first. Text on a shared screen is unreadable at a low
#: layer where a face still is, so a screen share gets its upgrades before any camera.
SOURCE_PRIORITY = {"screen": 0}
DEFAULT_PRIORITY = 1


@dataclass(frozen=True, slots=True)
class VideoTrackDemand:
    """One video track a subscriber receives, as the selector needs to see it at one tick."""

    track_id: str
    #: Ranked smallest first (index = ``TrackSettings.max_layer``), with bitrates and activity.
    layers: tuple[Layer, ...]
    settings: TrackSettings = field(default_factory=TrackSettings)
    source: str = "unknown"
    #: The rid the down-track forwards now; the starting point if the selector has no history.
    current: str | None = None
    #: Temporal layers the publisher sends (VP8: from the TIDs seen), None if not known.
    temporal_layers: int | None = None


@dataclass(frozen=True, slots=True)
class LayerTarget:
    """What to forward of one track to one subscriber.

    ``spatial``/``rid``: the layer to switch to and forward (None: nothing: paused, or no layer
    received yet). ``temporal``: the highest temporal layer to forward, None for all.
    ``desired_rid``: the layer preferences and budget allow, which differs from ``rid`` while
    that layer is not arriving; it must stay wanted from the publisher or it never comes back.
    ``starved``: even the lowest layer does not fit the budget: paused (``paused`` is set too),
    or forwarded anyway where the selector may not pause.
    ``limited``: the budget, not the preferences, keeps it below the layer it would like.
    """

    track_id: str
    spatial: int | None = None
    rid: str | None = None
    temporal: int | None = None
    desired_rid: str | None = None
    paused: bool = False
    starved: bool = False
    limited: bool = False


@dataclass(slots=True)
class _Memory:
    settings: TrackSettings
    desired_rid: str | None
    target_rid: str | None
    starved: bool = False
    lacking_since: float | None = None  # its lowest layer stopped fitting (not paused yet)


@dataclass(slots=True)
class _Plan:
    demand: VideoTrackDemand
    cap: int  # highest index the preferences allow
    keep: int  # the level it had (capped): keeping it needs no margin
    may_upgrade: bool
    priority: int
    was_starved: bool = False
    lacking_since: float | None = None
    level: int = 0
    starved: bool = False
    forced: bool = False  # does not fit, forwarded anyway (the selector may not pause)

    def cost(self, level: int) -> float:
        return self.demand.layers[level].bitrate


class LayerSelector:
    """Target layers for the video tracks of one subscriber connection, sharing one budget."""

    __slots__ = (
        "_budgeted",
        "_hold_until",
        "_memory",
        "allocated",
        "pause_after",
        "upgrade_hold",
        "upgrade_margin",
        "wanted",
    )

    def __init__(
        self,
        *,
        upgrade_margin: float = UPGRADE_MARGIN,
        upgrade_hold: float = UPGRADE_HOLD,
        pause_after: float = PAUSE_AFTER,
    ) -> None:
        self.upgrade_margin = upgrade_margin
        self.upgrade_hold = upgrade_hold
        self.pause_after = pause_after
        self._memory: dict[str, _Memory] = {}
        self._hold_until = float("-inf")
        self._budgeted = False  # the last select had a budget
        #: bit/s the targets of the last ``select`` cost (layers as measured)
        self.allocated = 0.0
        #: bit/s a budget must have for the next step up (an upgrade or a resume, with the
        #: margin) when the last budget held something back, else None: what to probe for
        self.wanted: float | None = None

    def select(
        self,
        tracks: Sequence[VideoTrackDemand],
        budget: float | None,
        now: float,
        *,
        may_pause: bool = True,
    ) -> dict[str, LayerTarget]:
        """Targets by track id. ``budget``: bit/s for all these tracks, None for unlimited.
        ``may_pause``: a track whose lowest layer does not fit is paused, else forwarded anyway.

        Tracks are served in :data:`SOURCE_PRIORITY` order, the caller's order within a source:
        each gets its lowest layer, then each gets back the layer it had, then upgrades, a
        layer at a time round-robin; a priority class is served before the next one.
        """
        results: dict[str, LayerTarget] = {}
        memory: dict[str, _Memory] = {}
        plans: list[_Plan] = []
        for demand in tracks:
            if demand.settings.paused or not demand.layers:
                results[demand.track_id] = LayerTarget(
                    demand.track_id, paused=demand.settings.paused
                )
                continue
            plans.append(self._plan(demand, now))
        plans.sort(key=lambda plan: plan.priority)
        if budget is None:
            for plan in plans:
                plan.level = plan.cap
        else:
            self._allocate(plans, budget, now, may_pause)
        self.allocated = 0.0
        for plan in plans:
            demand = plan.demand
            if (plan.level < plan.keep and self._budgeted) or (
                plan.starved and not plan.was_starved
            ):
                self._hold_until = now + self.upgrade_hold  # down for budget, not preferences
            if plan.starved:
                memory[demand.track_id] = _Memory(demand.settings, None, None, starved=True)
                results[demand.track_id] = LayerTarget(
                    demand.track_id, paused=True, starved=True, limited=True
                )
                continue
            self.allocated += plan.cost(plan.level)
            previous = self._memory.get(demand.track_id)
            spatial = _arriving(demand, plan.level, previous.target_rid if previous else None)
            desired = demand.layers[plan.level].rid
            target = demand.layers[spatial].rid
            memory[demand.track_id] = _Memory(
                demand.settings, desired, target, lacking_since=plan.lacking_since
            )
            results[demand.track_id] = LayerTarget(
                demand.track_id,
                spatial,
                target,
                _temporal(demand),
                desired,
                starved=plan.forced,
                limited=budget is not None and (plan.level < plan.cap or plan.forced),
            )
        self._memory = memory  # tracks gone or paused are forgotten
        self._budgeted = budget is not None
        steps = [
            plan.cost(0)
            if plan.starved
            else 0.0
            if plan.forced  # already counted: the budget must grow to what is allocated
            else plan.cost(plan.level + 1) - plan.cost(plan.level)
            for plan in plans
            if budget is not None and (plan.starved or plan.forced or plan.level < plan.cap)
        ]
        self.wanted = (self.allocated + min(steps)) * self.upgrade_margin if steps else None
        return results

    def _plan(self, demand: VideoTrackDemand, now: float) -> _Plan:
        layers = demand.layers
        cap = _cap(layers, demand.settings)
        previous = self._memory.get(demand.track_id)
        had = previous.desired_rid if previous is not None else demand.current
        keep = _index(layers, had) or 0
        # A new track or new preferences is the subscriber asking: no hold, margin still.
        asked = previous is None or previous.settings != demand.settings
        priority = SOURCE_PRIORITY.get(demand.source, DEFAULT_PRIORITY)
        starved = previous is not None and previous.starved
        may_upgrade = asked or now >= self._hold_until
        lacking = None if previous is None else previous.lacking_since
        return _Plan(demand, cap, min(keep, cap), may_upgrade, priority, starved, lacking)

    def _allocate(self, plans: list[_Plan], budget: float, now: float, may_pause: bool) -> None:
        used = 0.0
        for plan in plans:  # the lowest layer of each, in priority order, while it fits
            total = used + plan.cost(0)
            if plan.was_starved:  # resuming is an upgrade: the margin, after the hold
                plan.starved = not plan.may_upgrade or total * self.upgrade_margin > budget
                continue
            if total <= budget:
                plan.lacking_since = None
            else:
                if plan.lacking_since is None:
                    plan.lacking_since = now
                if may_pause and now - plan.lacking_since >= self.pause_after:
                    plan.starved = True
                    continue
                plan.forced = True
            used = total
        for priority in sorted({plan.priority for plan in plans}):
            group = [
                plan
                for plan in plans
                if plan.priority == priority and not plan.starved and not plan.forced
            ]
            used = self._raise(group, used, budget, upgrade=False)
            used = self._raise(group, used, budget, upgrade=True)

    def _raise(self, group: list[_Plan], used: float, budget: float, *, upgrade: bool) -> float:
        """A layer up per track per round while it fits; keeping needs no margin, upgrading does."""
        raised = True
        while raised:
            raised = False
            for plan in group:
                if upgrade:
                    if not plan.may_upgrade or plan.level < plan.keep or plan.level >= plan.cap:
                        continue
                elif plan.level >= plan.keep:
                    continue
                total = used - plan.cost(plan.level) + plan.cost(plan.level + 1)
                if total * (self.upgrade_margin if upgrade else 1.0) <= budget:
                    plan.level += 1
                    used = total
                    raised = True
        return used


def _cap(layers: tuple[Layer, ...], settings: TrackSettings) -> int:
    """The highest layer index the preferences allow."""
    cap = len(layers) - 1
    if settings.max_layer is not None:
        cap = min(cap, max(settings.max_layer, 0))
    max_width, max_height = settings.max_width, settings.max_height
    if max_width is not None or max_height is not None:
        # The smallest layer at least this large, else the largest. A layer whose size is not
        # known yet cannot qualify: the cap is then no tighter than the largest known fit.
        for index, layer in enumerate(layers):
            if layer.width is None or layer.height is None:
                continue
            if (max_width is None or layer.width >= max_width) and (
                max_height is None or layer.height >= max_height
            ):
                cap = min(cap, index)
                break
    return cap


def _arriving(demand: VideoTrackDemand, desired: int, previous_rid: str | None) -> int:
    """The layer to forward: the desired one if it arrives, else the best arriving one below it,
    else the lowest arriving one above. If none arrives (the publisher's link broke), stay on
    the previous target so nothing moves when it comes back."""
    layers = demand.layers
    arriving = [i for i, layer in enumerate(layers) if layer.active]
    if not arriving:
        previous = _index(layers, previous_rid)
        if previous is None:
            previous = _index(layers, demand.current)
        return desired if previous is None else previous
    below = [i for i in arriving if i <= desired]
    return below[-1] if below else arriving[0]


def _index(layers: tuple[Layer, ...], rid: str | None) -> int | None:
    return next((i for i, layer in enumerate(layers) if layer.rid == rid), None)


def _temporal(demand: VideoTrackDemand) -> int | None:
    wanted = demand.settings.max_temporal_layer
    if wanted is None:
        return None
    wanted = max(wanted, 0)
    count = demand.temporal_layers
    if count is not None and wanted >= count - 1:
        return None  # all of them: nothing to drop
    return wanted


def wanted_layers(targets: Iterable[LayerTarget], currents: Iterable[str | None] = ()) -> set[str]:
    """The rids of one publisher track that some subscriber needs: what it forwards now
    (``currents``, the down-tracks' layers, covering a switch in progress), what it switches to
    and what it would take if it arrived."""
    wanted = {rid for rid in currents if rid is not None}
    for target in targets:
        wanted.update(rid for rid in (target.rid, target.desired_rid) if rid is not None)
    return wanted


class WantedLayers:
    """What one publisher track was told about its layers, with a grace before turning one off.

    A layer starts as active (a publisher sends every encoding it offered). It is reported
    inactive once unwanted for :attr:`grace` seconds, and active again as soon as it is wanted.
    """

    __slots__ = ("_active", "_unwanted_since", "grace")

    def __init__(self, grace: float = UNWANTED_GRACE) -> None:
        self.grace = grace
        self._active: dict[str, bool] = {}
        self._unwanted_since: dict[str, float] = {}

    def update(
        self, rids: Sequence[str], wanted: Set[str], now: float
    ) -> tuple[LayerActivity, ...] | None:
        """Every layer's activity (for :class:`~sfu.api.PublisherLayers`) if any changed, else
        None. Call it on each tick: a layer's grace only runs out on a call."""
        changed = False
        active: dict[str, bool] = {}
        unwanted_since: dict[str, float] = {}
        for rid in rids:
            was = self._active.get(rid, True)
            if rid in wanted:
                active[rid] = True
            else:
                since = unwanted_since[rid] = self._unwanted_since.get(rid, now)
                active[rid] = was and now - since < self.grace
            changed = changed or active[rid] != was
        self._active, self._unwanted_since = active, unwanted_since  # layers gone are forgotten
        if not changed:
            return None
        return tuple(LayerActivity(rid, active[rid]) for rid in rids)
