"""Which worker a new room goes to (issue 13, docs/design/scale-out-plan.md §3.4). Pure: the
caller passes the loads and the time.

Among the workers up and not draining, the one with the lowest CPU use — the exponentially
weighted mean of its own CPU time per second, :func:`smoothed` — plus :data:`ROOM_WEIGHT` for
each room placed on it in the last :data:`RECENT` seconds: a new room has no load yet, and a
burst of joins for new rooms must not all land on the worker that was idle a moment ago. Ties go
to the one sending fewer packets, then the lower index. Rooms never move once placed: their
media state lives in one process (mediasoup's model).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

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


class Placement:
    """Chooses a worker for each new room, remembering its recent choices."""

    def __init__(self) -> None:
        self._recent: deque[tuple[float, int]] = deque()  # (when, index)

    def choose(self, loads: Sequence[WorkerLoad], now: float) -> int | None:
        """The index of the worker a new room goes to (None: no worker can take it)."""
        recent = self._recent
        while recent and now - recent[0][0] >= RECENT:
            recent.popleft()
        candidates = [w for w in loads if w.up and not w.draining]
        if not candidates:
            return None
        placed: dict[int, int] = {}
        for _, index in recent:
            placed[index] = placed.get(index, 0) + 1
        best = min(
            candidates,
            key=lambda w: (w.cpu + ROOM_WEIGHT * placed.get(w.index, 0), w.packets_out, w.index),
        )
        recent.append((now, best.index))
        return best.index
