"""The simulcast switch benchmark's numbers: per switch, per run, the table, aiosfu's timeline.

Times are ms after the request, on this machine's wall clock (page clocks mapped to it).
``getStats()`` rows are dated by the report's own ``timestamp``: Chromium serves a cached
report for 50 ms, so a counter seen in a report changed at most ~50 ms before that time (and
after the report before it).
"""

from __future__ import annotations

import contextlib
import json
import statistics
from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

WIDTHS = (320, 640, 1280)  # layer index (smallest first) -> frame width

#: aiosfu's debug lines, in the order a switch passes them
SERVER_EVENTS = {
    "track settings": "server_got_request_ms",
    "down-track target": "server_target_ms",
    "keyframe requested": "server_keyframe_request_ms",
    "down-track switched layer": "server_switched_ms",
}


def analyse_switch(
    index: int,
    was: int,
    layer: int,
    at: float,
    offsets: dict[str, float],
    window: dict[str, list[list[Any]]],
    publisher: tuple[dict[str, Any], dict[str, Any]],
    subscriber: tuple[dict[str, Any], dict[str, Any]],
    rid_of: dict[int, str],
) -> dict[str, Any]:
    """One switch from the rows of its window (the request at ``at``, wall-clock ms, to the
    next request) and the publisher's and subscriber's counters before and after it."""
    new, old = WIDTHS[layer], WIDTHS[was]
    result: dict[str, Any] = {"index": index, "from": old, "to": new, "at": round(at, 1)}
    sub_offset = offsets["subscriber"]
    # [callback now, width, presentationTime, receiveTime, rtp ts], from 0.5 s before the request
    earlier = [f for f in window["frames"] if f[0] + sub_offset < at]
    frames = window["frames"][len(earlier) :]
    widths = [int(f[1]) for f in frames]
    first = widths.index(new) if new in widths else None
    result["presented_ms"] = result["received_ms"] = None
    if first is not None:
        frame = frames[first]
        result["presented_ms"] = round(frame[2] + sub_offset - at, 1)
        if frame[3] > 0:
            result["received_ms"] = round(frame[3] + sub_offset - at, 1)
    result["third_layer_frames"] = sum(1 for w in widths if w not in (old, new))
    result["third_layer_widths"] = sorted({w for w in widths if w not in (old, new)})
    result["old_frames_after_new"] = sum(1 for w in widths[first or len(widths) :] if w == old)
    # the longest time between presented frames from the last before the request to 1 s after
    shown = [f[2] + sub_offset for f in earlier[-1:] + frames if f[2] + sub_offset < at + 1000]
    result["longest_gap_ms"] = (
        round(max(b - a for a, b in pairwise(shown)), 1) if len(shown) > 1 else None
    )

    stats = window["stats"]  # [poll time, frameWidth, keyFramesDecoded, freezeCount, report ts]
    seen = next((s for s in stats if int(s[1]) == new), None)
    result["stats_ms"] = round(seen[4] - at, 1) if seen else None
    result["stats_third_layer_widths"] = sorted(
        {int(s[1]) for s in stats if int(s[1]) not in (old, new, 0)}
    )

    before, after = publisher
    rids = [rid for rid in after if rid in before]
    result["keyframe_requests"] = {
        rid: after[rid]["pli"] - before[rid]["pli"] + after[rid]["fir"] - before[rid]["fir"]
        for rid in rids
    }
    result["keyframes_encoded"] = {
        rid: after[rid]["keyframes"] - before[rid]["keyframes"] for rid in rids
    }
    target = result["target_rid"] = rid_of[new]
    rows = window["publisher"]  # [poll time, rid, pliCount, firCount, keyFramesEncoded, ts]
    result["publisher_pli_ms"] = _first_rise(rows, target, 2, before[target]["pli"], at)
    result["publisher_keyframe_ms"] = _first_rise(rows, target, 4, before[target]["keyframes"], at)

    sub_before, sub_after = subscriber
    counted = next((row for row in stats if int(row[3]) > sub_before.get("freezes", 0)), None)
    result["freeze_counted_ms"] = round(counted[4] - at, 1) if counted else None
    for key in ("freezes", "freeze_s", "keyframes", "plis", "nacks", "lost", "dropped"):
        result[f"subscriber_{key}"] = round(sub_after.get(key, 0) - sub_before.get(key, 0), 3)
    return result


def longest_gaps(frames: list[list[Any]], start: float, seconds: int) -> list[float]:
    """The longest time between presented frames in each second from ``start`` (page ms)."""
    shown = [f[2] for f in frames]
    out = []
    for second in range(seconds):
        low, high = start + 1000 * second, start + 1000 * (second + 1)
        inside = [t for t in shown if low <= t < high]
        if len(inside) > 1:
            out.append(round(max(b - a for a, b in pairwise(inside)), 1))
    return out


def _first_rise(
    rows: list[list[Any]], rid: str, column: int, start: int, at: float
) -> float | None:
    """The report time at which ``rid``'s counter first exceeded ``start``, ms after ``at``."""
    for row in rows:
        if row[1] == rid and int(row[column]) > start:
            return round(float(row[5]) - at, 1)
    return None


def progress(s: dict[str, Any]) -> str:
    requests = ",".join(f"{rid}:{n}" for rid, n in sorted(s["keyframe_requests"].items()))
    return (
        f"#{s['index'] + 1:>2} {s['from']:>4}->{s['to']:<4} presented {s['presented_ms']} ms "
        f"(received {s['received_ms']}, stats {s['stats_ms']}) third {s['third_layer_frames']} "
        f"keyframe requests {requests} freezes {s['subscriber_freezes']}"
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n q / 100)
    return ordered[int(rank) - 1]


def distribution(values: Sequence[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None]
    return {
        "median": round(statistics.median(present), 1) if present else None,
        "p90": percentile(present, 90),
        "max": max(present) if present else None,
        "missing": len(values) - len(present),
    }


def summarize(sfu: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One SFU's rounds together."""
    switches = [s for run in runs for s in run["switches"]]
    n = max(len(switches), 1)
    out: dict[str, Any] = {"sfu": sfu, "rounds": len(runs), "switches": len(switches)}
    for key in ("presented_ms", "received_ms", "stats_ms"):
        out[key] = distribution([s[key] for s in switches])
    out["third_layer_switches"] = sum(
        1 for s in switches if s["third_layer_frames"] or s["stats_third_layer_widths"]
    )
    out["third_layer_frames"] = sum(s["third_layer_frames"] for s in switches)
    total = sum(sum(s["keyframe_requests"].values()) for s in switches)
    out["keyframe_requests_per_switch"] = round(total / n, 2)
    out["keyframe_requests_to_other_layers"] = sum(
        count
        for s in switches
        for rid, count in s["keyframe_requests"].items()
        if rid != s["target_rid"]
    )
    encoded = sum(sum(s["keyframes_encoded"].values()) for s in switches)
    out["keyframes_encoded_per_switch"] = round(encoded / n, 2)
    out["longest_gap_ms"] = distribution([s["longest_gap_ms"] for s in switches])
    baseline_s = sum(run["baseline"]["seconds"] for run in runs)
    baseline_freezes = sum(run["baseline"]["freezes"] for run in runs)
    out["baseline_freezes"] = f"{baseline_freezes} in {baseline_s:.0f} s"
    out["baseline_longest_gap_ms"] = distribution(
        [gap for run in runs for gap in run["baseline"]["longest_gaps_ms"]]
    )
    out["freezes"] = sum(
        run["subscriber_end"]["freezes"] - run["subscriber_start"]["freezes"] for run in runs
    )
    out["freeze_s"] = round(
        sum(
            run["subscriber_end"]["freeze_s"] - run["subscriber_start"]["freeze_s"] for run in runs
        ),
        3,
    )

    # what the subscriber's jitter buffer and decoder took per frame, over the switching
    def change(key: str) -> float:
        ends = [r["subscriber_end"].get(key, 0) - r["subscriber_start"].get(key, 0) for r in runs]
        return float(sum(ends))

    buffered, emitted = change("jitter_buffer_s"), change("jitter_buffer_frames")
    decoding, decoded = change("decode_s"), change("frames")
    out["jitter_buffer_ms_per_frame"] = round(1000 * buffered / max(emitted, 1), 1)
    out["decode_ms_per_frame"] = round(1000 * decoding / max(decoded, 1), 1)
    for key in ("server_cpu_pct", "ours_cpu_pct", "others_cpu_pct"):
        out[key] = round(statistics.mean(run[key] for run in runs), 1)
    out["loadavg_before"] = [run["loadavg_before"][0] for run in runs]
    out["presented_ms_by_width"] = {
        width: distribution([s["presented_ms"] for s in switches if s["to"] == width])["median"]
        for width in WIDTHS
    }
    out["received_to_presented_ms"] = distribution(
        [
            s["presented_ms"] - s["received_ms"]
            for s in switches
            if s["presented_ms"] is not None and s["received_ms"] is not None
        ]
    )["median"]
    timeline = [row for run in runs for row in run.get("server_timeline", [])]
    if timeline:
        out["server_timeline"] = {
            key: distribution([row.get(key) for row in timeline])["median"]
            for key in SERVER_EVENTS.values()
        }
    return out


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The runs side by side, as a Markdown table."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    def spread(d: dict[str, Any]) -> str:
        never = f" ({d['missing']} never)" if d["missing"] else ""
        return f"{ms(d['median'])} / {ms(d['p90'])} / {ms(d['max'])}{never}"

    lines = ["| | " + " | ".join(r["sfu"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    cells: list[tuple[str, list[str]]] = [
        ("switches (rounds)", [f"{r['switches']} ({r['rounds']})" for r in rows]),
        (
            "request → first frame of the new layer presented (rVFC), ms: median / p90 / max",
            [spread(r["presented_ms"]) for r in rows],
        ),
        ("request → its last packet received, ms", [spread(r["received_ms"]) for r in rows]),
        (
            "request → getStats frameWidth (report time, 50 ms cache), ms",
            [spread(r["stats_ms"]) for r in rows],
        ),
        (
            "median to 320 / 640 / 1280 wide, ms",
            [" / ".join(ms(r["presented_ms_by_width"][w]) for w in WIDTHS) for r in rows],
        ),
        (
            "median last packet received → presented, ms",
            [ms(r["received_to_presented_ms"]) for r in rows],
        ),
        (
            "subscriber's jitter buffer / decode time per frame, ms",
            [f"{r['jitter_buffer_ms_per_frame']} / {r['decode_ms_per_frame']}" for r in rows],
        ),
        (
            "switches showing a third layer (its frames)",
            [f"{r['third_layer_switches']} ({r['third_layer_frames']})" for r in rows],
        ),
        (
            "keyframe requests per switch (to other layers, in all)",
            [
                f"{r['keyframe_requests_per_switch']} ({r['keyframe_requests_to_other_layers']})"
                for r in rows
            ],
        ),
        ("keyframes encoded per switch", [str(r["keyframes_encoded_per_switch"]) for r in rows]),
        ("freezes (their total s)", [f"{r['freezes']} ({r['freeze_s']})" for r in rows]),
        ("freezes before the switches, no switching", [r["baseline_freezes"] for r in rows]),
        (
            "longest time between presented frames around a switch, ms: median / p90 / max",
            [spread(r["longest_gap_ms"]) for r in rows],
        ),
        (
            "the same in each second before the switches, no switching",
            [spread(r["baseline_longest_gap_ms"]) for r in rows],
        ),
        (
            "CPU %: SFU / SFU + Chromium + harness / other processes (of 200)",
            [f"{r['server_cpu_pct']} / {r['ours_cpu_pct']} / {r['others_cpu_pct']}" for r in rows],
        ),
        (
            "1-min load average before each round",
            [" ".join(str(x) for x in r["loadavg_before"]) for r in rows],
        ),
    ]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in cells]
    return "\n".join(lines)


def server_timeline(
    log_path: Path, switches: list[dict[str, Any]], ssrcs: dict[str, str], interval: float
) -> list[dict[str, Any]]:
    """Per switch, when aiosfu's debug lines came, ms after the request: the request arrived
    ("track settings"), the down-track got its target, the keyframe request for it went out
    (its SSRC's rid), the target's keyframe was forwarded ("down-track switched layer")."""
    events: list[tuple[float, dict[str, Any]]] = []
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            entry = json.loads(line)
            if entry.get("event") in SERVER_EVENTS:
                when = datetime.fromisoformat(entry["timestamp"]).timestamp() * 1000
                events.append((when, entry))
    out = []
    for s in switches:
        row: dict[str, Any] = {"index": s["index"]}
        for when, entry in events:
            offset = when - s["at"]
            if not -50 <= offset < interval * 1000:
                continue
            key = SERVER_EVENTS[entry["event"]]
            if entry["event"] == "keyframe requested":
                row.setdefault("keyframe_requests", []).append(
                    [round(offset, 1), ssrcs.get(str(entry.get("ssrc")), "?")]
                )
            if key not in row:
                row[key] = round(offset, 1)
        out.append(row)
    return out
