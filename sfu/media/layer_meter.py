"""What one simulcast layer is: its bitrate, whether it arrives, its size; and the track's ranking.

The meter costs nothing per packet: the layer's receiver already counts bytes and packets, and a
periodic tick (about every 0.25 s) hands the totals to :meth:`LayerMeter.sample`. Layers are then
ranked smallest first by measured resolution, then bitrate (:class:`LayerRanking`), never by rid
name or order: browsers list their encodings in different orders.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

#: Seconds of history the bitrate is averaged over: one second holds a whole number of frames at
#: any frame rate (so the rate does not swing with the frame phase of the tick) and a keyframe is
#: spread over it instead of showing as a spike.
BITRATE_WINDOW = 1.0

#: Seconds without a packet after which a layer counts as stopped. A tick only sees that packets
#: arrived since the previous tick, so a flowing layer shows an arrival at least every
#: frame interval + tick period: a 7 fps layer (143 ms between frames) with 0.25 s ticks shows
#: one every 0.4 s at worst, and any source above ~1.3 fps stays active. Longer would leave the
#: subscribers of a layer the publisher stopped (CPU or uplink limit) frozen longer before they
#: fall to another.
INACTIVE_AFTER = 1.0

#: How far a layer's bitrate must move before its rank follows. Two layers of equal resolution
#: (or unknown resolution) with close bitrates would otherwise swap indexes on noise, moving
#: subscribers between them; layers that differ for real (simulcast encodings are 2-4x apart)
#: are far outside this band.
RANK_MARGIN = 1.5


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer of a track as the selector sees it at one tick."""

    rid: str
    bitrate: float = 0.0
    active: bool = True
    width: int | None = None
    height: int | None = None

    @property
    def pixels(self) -> int | None:
        if self.width is None or self.height is None:
            return None
        return self.width * self.height


class LayerMeter:
    """Bitrate, activity and frame size of one incoming layer, from counters sampled on a tick.

    The bitrate is the byte count difference over the actual time between samples (at least
    :data:`BITRATE_WINDOW`), so a late or early tick changes the span, not the rate. It is the rate
    as of the last sample that saw packets: a layer that stops keeps the bitrate it had while it
    was sending, which is what it will cost when it comes back (and what keeps its rank).
    """

    __slots__ = (
        "_last_arrival",
        "_last_packets",
        "_now",
        "_samples",
        "bitrate",
        "height",
        "inactive_after",
        "width",
        "window",
    )

    def __init__(
        self, *, window: float = BITRATE_WINDOW, inactive_after: float = INACTIVE_AFTER
    ) -> None:
        self.window = window
        self.inactive_after = inactive_after
        #: bit/s
        self.bitrate = 0.0
        self.width: int | None = None
        self.height: int | None = None
        self._samples: deque[tuple[float, int]] = deque()  # (time, bytes total), oldest first
        self._last_packets = 0
        self._last_arrival: float | None = None
        self._now: float | None = None

    @property
    def active(self) -> bool:
        """Packets arrived within :attr:`inactive_after` before the last sample."""
        if self._last_arrival is None or self._now is None:
            return False
        return self._now - self._last_arrival < self.inactive_after

    def sample(self, bytes_total: int, packets_total: int, now: float) -> None:
        """Take the receiver's running totals at ``now`` (a tick, not a packet)."""
        samples = self._samples
        if samples and (bytes_total < samples[-1][1] or packets_total < self._last_packets):
            # The counters restarted (a new receiver for this layer): a new history.
            samples.clear()
            self._last_packets = 0
        arrived = packets_total > self._last_packets
        if arrived:
            if not self.active and samples:
                # Sending again after a stop: average over the time it has been sending only,
                # or the idle second before would make it look cheap to the selector.
                last = samples[-1]
                samples.clear()
                samples.append(last)
            self._last_arrival = now
        self._last_packets = packets_total
        self._now = now
        samples.append((now, bytes_total))
        # The oldest sample kept is the newest one at least a window old.
        while len(samples) > 1 and samples[1][0] <= now - self.window:
            samples.popleft()
        start, start_bytes = samples[0]
        if arrived and now > start:
            self.bitrate = (bytes_total - start_bytes) * 8 / (now - start)

    def on_frame_size(self, width: int, height: int) -> None:
        """A keyframe told the layer's resolution (kept until the next one says otherwise)."""
        self.width = width
        self.height = height

    def layer(self, rid: str) -> Layer:
        return Layer(rid, self.bitrate, self.active, self.width, self.height)


class LayerRanking:
    """Orders one track's layers smallest first; index i is what ``TrackSettings.max_layer`` means.

    With every layer's resolution known: by pixels, then bitrate. Otherwise (H264 before its
    parameter sets are parsed, a layer that has not sent a keyframe yet) by bitrate alone, since
    sizes known for some layers cannot be compared with the others. The bitrate used for ranking
    follows the measured one only when it moves by more than :data:`RANK_MARGIN`, so layers with
    close bitrates keep their order under noise. Ties fall to the rid, for a stable order.
    """

    __slots__ = ("_held", "margin")

    def __init__(self, margin: float = RANK_MARGIN) -> None:
        self.margin = margin
        self._held: dict[str, float] = {}

    def rank(self, layers: Sequence[Layer]) -> tuple[Layer, ...]:
        held: dict[str, float] = {}
        for layer in layers:
            previous = self._held.get(layer.rid)
            rate = layer.bitrate
            if previous is not None and previous / self.margin <= rate <= previous * self.margin:
                rate = previous
            held[layer.rid] = rate
        self._held = held  # layers gone are forgotten
        if all(layer.pixels is not None for layer in layers):
            return tuple(sorted(layers, key=lambda x: (x.pixels or 0, held[x.rid], x.rid)))
        return tuple(sorted(layers, key=lambda x: (held[x.rid], x.rid)))
