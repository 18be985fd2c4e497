"""Which worker, or which node, a new room goes to (issue 13, docs/design/scale-out-plan.md
§3.4). Pure: the caller passes the loads and the time.

Among the workers up and not draining, the one with the lowest CPU use — the exponentially
weighted mean of its own CPU time per second, :func:`smoothed` — plus :data:`ROOM_WEIGHT` for
each room placed on it in the last :data:`RECENT` seconds: a new room has no load yet, and a
burst of joins for new rooms must not all land on the worker that was idle a moment ago. Ties go
to the one sending fewer packets, then the lower index. Rooms never move once placed: their
media state lives in one process (mediasoup's model).

Nodes (:mod:`signaling.cluster.directory`) are chosen the same way, by :meth:`Placement.among`:
each node remembers the rooms it placed; another node's recent placements show up in that
node's load a second later.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

#: what a candidate is known by: a worker's index, a node's id
Key = TypeVar("Key", int, str)

#: Seconds a placement counts against its worker, and the CPU mean's time constant.
RECENT = 3.0
#: What one recently placed room weighs, in cores: a small call's steady share of a core.
ROOM_WEIGHT = 0.05


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """What a worker reported of itself (its ``load`` frame), as the pool last saw it."""

    index: int
    up: bool
    draining: bool = False
    cpu: float = 0.0  # cores, smoothed
    packets_out: float = 0.0  # per second


def smoothed(previous: float | None, sample: float, elapsed: float, tau: float = RECENT) -> float:
    """An exponentially weighted mean with time constant ``tau`` (s), updated by ``sample``
    measured over ``elapsed`` seconds (reports may come late or early)."""
    if previous is None or elapsed <= 0:
        return sample if previous is None else previous
    weight = 1.0 - math.exp(-elapsed / tau)
    return previous + weight * (sample - previous)


class Placement(Generic[Key]):
    """Chooses a worker (or node) for each new room, remembering its recent choices."""

    def __init__(self) -> None:
        self._recent: deque[tuple[float, Key]] = deque()  # (when, chosen)

    def choose(self: Placement[int], loads: Sequence[WorkerLoad], now: float) -> int | None:
        """The index of the worker a new room goes to (None: no worker can take it)."""
        candidates = [(w.index, w.cpu, w.packets_out) for w in loads if w.up and not w.draining]
        return self.among(candidates, now)

    def among(
        self, candidates: Sequence[tuple[Key, float, float]], now: float, *, record: bool = True
    ) -> Key | None:
        """The key of the candidate, as (key, cpu, packets out per second), a new room goes to
        (ties between equal loads: the lowest key); ``record=False``: not counted as placed
        until :meth:`placed` says so (a claim may find the room placed already)."""
        recent = self._recent
        while recent and now - recent[0][0] >= RECENT:
            recent.popleft()
        if not candidates:
            return None
        weights: dict[Key, float] = {}
        for _, key in recent:
            weights[key] = weights.get(key, 0.0) + ROOM_WEIGHT
        best = min(candidates, key=lambda c: (c[1] + weights.get(c[0], 0.0), c[2], c[0]))[0]
        if record:
            self.placed(best, now)
        return best

    def placed(self, key: Key, now: float) -> None:
        """A new room went to ``key``."""
        self._recent.append((now, key))
