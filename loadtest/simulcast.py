"""Simulcast in the load test: the layers publishers send, and which layer subscribers got.

Publishers send their video as rid simulcast (RFC 8853): one clip per layer, each encoded once
at start (``loadtest.media.encode_video``) and played by ``sfu_client``'s ``PreEncodedLayers``.
Subscribers take the best layer, or ask for one with ``setTrackSettings`` ``maxLayer``
(``--subscriber-layers``: the same for all, spread round robin over the layers, or cycling
through them so that a run keeps switching).

Which layer a subscriber receives is read from what arrives, without decoding: the SFU forwards
one layer per subscriber on one SSRC and switches only at a keyframe of the new layer, so the
size in each keyframe's header (RFC 6386 §9.1) is the layer from that frame on
(:meth:`loadtest.stats.ReceivedStream.on_keyframe`). Layers are told apart by size, as the server
ranks them: layer 0 is the smallest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loadtest.media import EncodedClip, encode_video
from loadtest.stats import ReceivedStream, summary

if TYPE_CHECKING:
    from loadtest.participant import LoadParticipant

#: the rids of a three-layer browser publisher (Chromium's order: low to high)
BROWSER_RIDS = ("q", "h", "f")
MAX_LAYERS = 4  # the server takes up to four per m-line (sfu.media.sdp_simulcast)
DEFAULT_LAYERS = "320x180@150k,640x360@500k,1280x720@1.5M"
#: per-stream detail (layer changes) is reported for at most this many streams
MAX_STREAMS_LISTED = 50
#: a layer asked for this shortly before the end may not have arrived yet (seconds)
GRACE = 1.0
SUBSCRIBER_CHOICES = ("best", "spread", "cycle")
Change = tuple[float, int, int]  # (time, width, height): a keyframe of another size
_SPEC = re.compile(r"(\d+)x(\d+)(?:@([0-9.]+[kKmM]?))?")


@dataclass(frozen=True, slots=True)
class LayerSpec:
    rid: str
    width: int
    height: int
    bitrate: int  # bits/s

    @property
    def label(self) -> str:
        return size_label(self.width, self.height)


def size_label(width: int, height: int) -> str:
    return f"{width}x{height}"


def parse_bitrate(text: str) -> int:
    """``300k``, ``1.5M`` or ``64000`` -> bits per second (ValueError if not positive)."""
    value = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(value[-1:], 1)
    try:
        number = float(value[:-1] if scale > 1 else value)
    except ValueError:
        raise ValueError(f"not a bitrate: {text!r} (e.g. 300k, 1.5M)") from None
    if number <= 0:
        raise ValueError("a bitrate must be positive")
    return round(number * scale)


def parse_layers(text: str) -> tuple[LayerSpec, ...]:
    """``320x180@150k,640x360@500k,...`` -> layers sorted small to large (rids q, h, f for three,
    else l0, l1, ...). A layer without ``@bitrate`` gets 0.1 bit per pixel at 30 fps."""
    sizes: list[tuple[int, int, int]] = []
    for item in text.split(","):
        match = _SPEC.fullmatch(item.strip())
        if match is None:
            raise ValueError(f"not a layer: {item.strip()!r} (e.g. 640x360@500k)")
        width, height = int(match[1]), int(match[2])
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"layer {item.strip()}: width and height must be positive and even")
        bitrate = parse_bitrate(match[3]) if match[3] else max(30_000, width * height * 3)
        sizes.append((width, height, bitrate))
    if not 2 <= len(sizes) <= MAX_LAYERS:
        raise ValueError(f"simulcast needs 2 to {MAX_LAYERS} layers, got {len(sizes)}")
    sizes.sort(key=lambda s: (s[0] * s[1], s[2]))
    if len({(w, h) for w, h, _ in sizes}) != len(sizes):
        raise ValueError("two layers have the same size: the server could not tell them apart")
    rids = BROWSER_RIDS if len(sizes) == len(BROWSER_RIDS) else [f"l{i}" for i in range(len(sizes))]
    return tuple(LayerSpec(r, w, h, b) for r, (w, h, b) in zip(rids, sizes, strict=True))


def parse_subscriber_layers(text: str, layers: int) -> str | int:
    """``best``, ``spread``, ``cycle`` or a layer index below ``layers``."""
    if text in SUBSCRIBER_CHOICES:
        return text
    if text.isdigit() and int(text) < layers:
        return int(text)
    raise ValueError(
        f"--subscriber-layers is best, spread, cycle or a layer 0 to {layers - 1}, not {text!r}"
    )


@dataclass(frozen=True, slots=True)
class LayerPlan:
    """The ``maxLayer`` a participant asks for the video it receives: ``first``, then (when
    ``every`` is set) the next layer every ``every`` seconds, round and round."""

    first: int
    layers: int
    every: float | None = None

    def layer(self, step: int) -> int:
        return (self.first + step) % self.layers


def plan_for(choice: str | int, index: int, layers: int, every: float) -> LayerPlan | None:
    """What participant ``index`` of its room asks for (None: nothing, so the best)."""
    if choice == "best":
        return None
    if choice in ("spread", "cycle"):
        return LayerPlan(index % layers, layers, every if choice == "cycle" else None)
    return LayerPlan(int(choice), layers)


def encode_layers(
    layers: Sequence[LayerSpec], fps: int, seconds: float = 3.0
) -> dict[str, EncodedClip]:
    """One clip per layer, by rid (for ``PreEncodedLayers``)."""
    return {
        layer.rid: encode_video(layer.width, layer.height, fps, seconds, layer.bitrate)
        for layer in layers
    }


def describe(layers: Sequence[LayerSpec], fps: int) -> str:
    shown = ", ".join(f"{la.rid} {la.label} {la.bitrate // 1000} kbit/s" for la in layers)
    return f"VP8 simulcast @{fps}: {shown}"


def clip_info(
    layers: Sequence[LayerSpec], clips: Mapping[str, EncodedClip]
) -> list[dict[str, Any]]:
    return [
        {"rid": la.rid, "size": la.label, "kbps": round(clips[la.rid].bitrate / 1000, 1)}
        for la in layers
    ]


# --- what subscribers received ---


def counts_now(streams: Iterable[ReceivedStream], now: float, within: float) -> dict[str, int]:
    """Video streams by the layer (size) they are on, of those that got a frame ``within``."""
    counts: dict[str, int] = {}
    for stream in streams:
        size, last = stream.size, stream.last_frame_at
        if size is not None and last is not None and now - last < within:
            label = size_label(*size)
            counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: _area(kv[0])))


def switches(streams: Iterable[ReceivedStream]) -> int:
    return sum(max(0, len(s.sizes) - 1) for s in streams)


def _area(label: str) -> int:
    width, height = label.split("x")
    return int(width) * int(height)


def report(
    parts: Sequence[LoadParticipant],
    t0: float,
    end: float,
    layers: Sequence[LayerSpec] | None,
    choice: str | int,
) -> dict[str, Any]:
    """The ``layers`` section, over the run up to ``end`` (the end of the hold): per layer, per
    stream, and the layer asked for against the one that came."""
    by_id = {p.participant_id: p for p in parts if p.participant_id is not None}
    order = [la.label for la in layers] if layers else []
    by_layer: dict[str, dict[str, Any]] = {}
    first_frames: dict[str, list[float]] = {}
    to_layer: list[float] = []
    outcomes = {"already": 0, "missing": 0, "pending": 0}
    listed: list[dict[str, Any]] = []
    streams = switched = checked = matched = 0
    for sub in parts:
        for stream in sub.streams.values():
            changes = [c for c in stream.sizes if c[0] <= end]  # the measured window
            if not changes or stream.publisher_id not in by_id:
                continue
            publisher = by_id[stream.publisher_id]
            streams += 1
            switched += len(changes) - 1
            spans = _spans(changes, end)
            for label, seconds in spans.items():
                entry = by_layer.setdefault(label, {"streams_at_end": 0, "stream_seconds": 0.0})
                entry["stream_seconds"] += seconds
            final = size_label(*changes[-1][1:])
            by_layer[final]["streams_at_end"] += 1
            since = max(sub.joined_at or t0, publisher.first_video_sent_at or t0)
            for label, at in _firsts(changes).items():
                first_frames.setdefault(label, []).append(at - since)
            asks = [
                (at, layer)
                for at, track, layer in sub.layer_requests
                if track == stream.track_id and at <= end
            ]
            expected = _expected(order, asks, sub.layer_plan is None, end, final)
            if expected is not None:
                checked += 1
                matched += final == expected
            if order:
                _outcomes(changes, asks, order, end, to_layer, outcomes)
            if len(listed) < MAX_STREAMS_LISTED:
                listed.append(
                    {
                        "subscriber": sub.name,
                        "publisher": publisher.name,
                        "asked_layers": [[round(at - t0, 2), layer] for at, layer in asks],
                        "expected": expected,
                        "final": final,
                        "switches": len(changes) - 1,
                        "keyframes": stream.keyframes,
                        "changes": [[round(t - t0, 2), size_label(w, h)] for t, w, h in changes],
                    }
                )
    for label, entry in by_layer.items():
        entry["stream_seconds"] = round(entry["stream_seconds"], 1)
        entry["first_frame_ms"] = summary(first_frames.get(label, []), 1000.0, 1)
    return {
        "subscriber_layers": choice,
        "video_streams": streams,
        "switches": switched,
        "by_layer": dict(sorted(by_layer.items(), key=lambda kv: _area(kv[0]))),
        "on_expected_layer": {"checked": checked, "matched": matched},
        "settings_to_layer_ms": {
            **summary(to_layer, 1000.0, 1),
            **outcomes,
        },
        "streams": listed,
        "streams_listed": len(listed),
    }


def _label(order: Sequence[str], layer: int) -> str:
    """The size of ``maxLayer`` ``layer``: the server ranks layers by size, above the top is
    the top."""
    return order[min(layer, len(order) - 1)]


def _expected(
    order: Sequence[str],
    asks: Sequence[tuple[float, int]],
    asks_nothing: bool,
    end: float,
    final: str,
) -> str | None:
    """The layer a stream should be on at ``end``: that of the last ask, unless it came less
    than :data:`GRACE` before and did not land yet (then the one before); the best when its
    subscriber asks nothing; None when unknown."""
    if not order:
        return None
    for at, layer in reversed(asks):
        label = _label(order, layer)
        if at <= end - GRACE or label == final:
            return label
    return order[-1] if asks_nothing else None


def _outcomes(
    changes: Sequence[Change],
    asks: Sequence[tuple[float, int]],
    order: Sequence[str],
    end: float,
    to_layer: list[float],
    outcomes: dict[str, int],
) -> None:
    """For each ask: the time to the first keyframe of its layer before the next ask, or
    whether the stream was ``already`` on it, or it never came (``missing``; ``pending`` when
    asked less than :data:`GRACE` before the end)."""
    for number, (at, layer) in enumerate(asks):
        label = _label(order, layer)
        until = asks[number + 1][0] if number + 1 < len(asks) else end
        got = _first_after(changes, label, at)
        if _size_at(changes, at) == label:
            outcomes["already"] += 1
        elif got is not None and got < until:
            to_layer.append(got - at)
        else:
            outcomes["pending" if at > end - GRACE else "missing"] += 1


def _spans(changes: Sequence[Change], end: float) -> dict[str, float]:
    """Seconds a stream spent on each layer, from its first keyframe to ``end``."""
    spans: dict[str, float] = {}
    for index, (at, width, height) in enumerate(changes):
        until = changes[index + 1][0] if index + 1 < len(changes) else end
        label = size_label(width, height)
        spans[label] = spans.get(label, 0.0) + max(0.0, until - at)
    return spans


def _firsts(changes: Sequence[Change]) -> dict[str, float]:
    """When a stream got its first keyframe of each layer."""
    firsts: dict[str, float] = {}
    for at, width, height in changes:
        firsts.setdefault(size_label(width, height), at)
    return firsts


def _size_at(changes: Sequence[Change], at: float) -> str | None:
    current = None
    for when, width, height in changes:
        if when > at:
            break
        current = size_label(width, height)
    return current


def _first_after(changes: Sequence[Change], label: str, at: float) -> float | None:
    for when, width, height in changes:
        if when >= at and size_label(width, height) == label:
            return when
    return None
