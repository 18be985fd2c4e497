"""The report of a run: a JSON document, a table to read at a glance, and a picture.

Totals describe the hold window (after the ramp-up, everyone in); the timeline covers the whole
run, one row per second. docs/operations.md explains every field.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

from loadtest import nodes
from loadtest.participant import LoadParticipant
from loadtest.runner import RunData, Snapshot
from loadtest.server import cpu_percent
from loadtest.simulcast import describe
from loadtest.simulcast import report as layers_report
from loadtest.stats import ReceivedStream, histogram_quantile, summary
from sfu.config import MAX_CLIENT_MLINES, MediaConfig, max_signaling_message, sdp_limit
from sfu_client import ServerError

#: Mean CPU of the load generator above this (percent of one core) makes its numbers suspect.
GENERATOR_SATURATED = 85.0


def build(data: RunData) -> dict[str, Any]:
    config = data.config
    parts = data.participants
    hs, he = data.hold_start, data.hold_end
    window = he.at - hs.at if hs is not None and he is not None and he.at > hs.at else None
    report: dict[str, Any] = {
        "started_at": datetime.datetime.fromtimestamp(data.started_at, datetime.UTC).isoformat(),
        "config": {
            "urls": list(config.urls),
            "rooms": config.rooms,
            "participants_per_room": config.participants,
            "publishers_per_room": config.publishers_per_room(),
            "ramp_s": config.ramp,
            "hold_s": config.duration,
            "video": (
                f"{config.width}x{config.height}@{config.fps} VP8 "
                f"{config.video_bitrate // 1000} kbit/s"
                if config.layers is None
                else describe(config.layers, config.fps)
            )
            if config.video
            else None,
            "simulcast": [la.label for la in config.layers] if config.layers else None,
            "subscriber_layers": config.subscriber_layers if config.layers else None,
            "audio": (
                f"Opus {config.audio_bitrate // 1000} kbit/s, {config.audio_frame_ms} ms packets"
            )
            if config.audio
            else None,
        },
        "media": data.clip_info,
        "hold_window_s": round(window, 2) if window is not None else None,
        "joins": nodes.joins(parts),
        "time_to_first_frame_ms": _first_frames(parts),
        "tracks": _tracks(parts),
        "sdp": _sdp(parts),
        "packets": _packets(hs, he, parts),
        "bitrate_per_subscriber_kbps": _bitrates(hs, he, parts, window),
        "latency_ms": summary(data.hold_latencies, 1000.0),
        "freezes": _freezes(parts),
        "layers": layers_report(
            parts,
            data.t0,
            he.at if he is not None else data.t0,
            config.layers,
            config.subscriber_layers,
        ),
        "generator": _generator(data, hs, he, window),
        "server": _server(data, hs, he),
        "nodes": nodes.build(data),
    }
    report["warnings"] = _warnings(report) + nodes.warnings(report["nodes"])
    report["timeline"] = data.timeline
    return report


def _tracks(parts: list[LoadParticipant]) -> dict[str, Any]:
    """Whether every participant received every track the others of its room published (at
    least one packet of it, over the whole run)."""
    published: dict[str, set[tuple[str, str]]] = {}
    for p in parts:
        if p.participant_id is not None:
            for track_id in p.track_ids:
                published.setdefault(p.room, set()).add((p.participant_id, track_id))
    checked = [p for p in parts if p.joined_at is not None]
    expected_counts: list[int] = []
    missing_counts: list[int] = []
    examples: list[str] = []
    for p in checked:
        expected = {t for pid, t in published.get(p.room, ()) if pid != p.participant_id}
        received = {s.track_id for s in p.streams.values() if s.packets and s.track_id}
        missing = expected - received
        expected_counts.append(len(expected))
        missing_counts.append(len(missing))
        if missing and len(examples) < 10:
            examples.append(
                f"{p.name} ({p.state}): {len(missing)} of {len(expected)}"
                + (f", {p.error}" if p.error else "")
            )
    return {
        "published": sum(len(tracks) for tracks in published.values()),
        "participants_checked": len(checked),
        "expected_per_participant": summary(expected_counts, 1.0, 1),
        "participants_missing_any": sum(n > 0 for n in missing_counts),
        "missing": sum(missing_counts),
        "examples": examples,
    }


def _sdp(parts: list[LoadParticipant]) -> dict[str, Any]:
    """The largest SDP each participant received (the server's offers and answers) and sent
    (its answers and offers), against what the server allows (sfu.config)."""
    joined = [p for p in parts if p.joined_at is not None]
    received = [p.sdp_received for p in joined if p.sdp_received.count]
    sent = [p.sdp_sent for p in joined if p.sdp_sent.count]
    errors: dict[str, int] = {}
    for p in joined:
        for error in p.client.errors if p.client is not None else ():
            code = error.code if isinstance(error, ServerError) else type(error).__name__
            errors[code] = errors.get(code, 0) + 1
    largest_in = max(received, key=lambda s: s.chars, default=None)
    largest_out = max(sent, key=lambda s: s.chars, default=None)
    return {
        "received_chars": summary([s.chars for s in received], 1.0, 0),
        "received_m_lines": summary([s.m_lines for s in received], 1.0, 1),
        "sent_chars": summary([s.chars for s in sent], 1.0, 0),
        "sent_m_lines": summary([s.m_lines for s in sent], 1.0, 1),
        "largest_received": _largest(largest_in),
        "largest_sent": _largest(largest_out),
        # a client's SDP is refused when larger than this for its m-lines and its own
        "sent_over_budget": sum(s.chars > sdp_limit(s.m_lines + MAX_CLIENT_MLINES) for s in sent),
        "message_limit_chars": max_signaling_message(MediaConfig()),
        "server_errors": errors,
    }


def _largest(sdp: Any) -> dict[str, int] | None:
    return None if sdp is None else {"chars": sdp.chars, "m_lines": sdp.m_lines}


def _video_stream(subscriber: LoadParticipant, publisher_id: str) -> ReceivedStream | None:
    for stream in subscriber.streams.values():
        if stream.publisher_id == publisher_id and stream.kind == "video":
            return stream
    return None


def _first_frames(parts: list[LoadParticipant]) -> dict[str, Any]:
    """From the later of (subscriber joined, publisher sent its first video) to the first
    complete video frame received, for every subscriber x publisher pair of a room."""
    delays: list[float] = []
    missing = 0
    for subscriber in parts:
        if subscriber.joined_at is None:
            continue
        for publisher in parts:
            if (
                publisher is subscriber
                or publisher.room != subscriber.room
                or publisher.participant_id is None
                or publisher.first_video_sent_at is None
            ):
                continue
            stream = _video_stream(subscriber, publisher.participant_id)
            if stream is None or stream.first_frame_at is None:
                missing += 1
                continue
            since = max(subscriber.joined_at, publisher.first_video_sent_at)
            delays.append(stream.first_frame_at - since)
    return {**summary(delays, 1000.0, 1), "missing": missing}


def _packets(
    hs: Snapshot | None, he: Snapshot | None, parts: list[LoadParticipant]
) -> dict[str, Any]:
    streams = [s for p in parts for s in p.streams.values()]
    whole_run = {
        "sent": sum(p.tx_packets for p in parts),
        "received": sum(s.packets for s in streams),
        "lost": sum(s.lost for s in streams),
    }
    if hs is None or he is None:
        return {"hold": None, "whole_run": whole_run}
    expected = he.rx_expected - hs.rx_expected
    received = he.rx_packets - hs.rx_packets
    lost = max(0, expected - received)
    return {
        "hold": {
            "sent": he.tx_packets - hs.tx_packets,
            "received": received,
            "lost": lost,
            "loss_percent": round(100.0 * lost / expected, 3) if expected else 0.0,
        },
        "whole_run": whole_run,
    }


def _bitrates(
    hs: Snapshot | None, he: Snapshot | None, parts: list[LoadParticipant], window: float | None
) -> dict[str, Any]:
    if hs is None or he is None or window is None:
        return {"count": 0}
    rates = [
        (he.rx_bytes.get(p.name, 0) - hs.rx_bytes.get(p.name, 0)) * 8 / window / 1000
        for p in parts
        if p.joined_at is not None and _has_publishers(p, parts)
    ]
    return summary(rates, 1.0, 1)


def _has_publishers(subscriber: LoadParticipant, parts: list[LoadParticipant]) -> bool:
    """Whether anyone else in the subscriber's room publishes (so it should receive)."""
    return any(p.publishes and p is not subscriber and p.room == subscriber.room for p in parts)


def _freezes(parts: list[LoadParticipant]) -> dict[str, Any]:
    video = [s for p in parts for s in p.streams.values() if s.kind == "video" and s.frames]
    return {
        "threshold_ms": 500,
        "count": sum(s.freezes for s in video),
        "video_streams": len(video),
        "streams_with_freezes": sum(s.freezes > 0 for s in video),
        "frozen_s": round(sum(s.frozen for s in video), 2),
        "longest_gap_ms": round(max((s.longest_gap for s in video), default=0.0) * 1000, 1),
    }


def _generator(
    data: RunData, hs: Snapshot | None, he: Snapshot | None, window: float | None
) -> dict[str, Any]:
    hold = [r for r in data.timeline if r["phase"] == "hold"] or data.timeline
    mean = None
    if hs is not None and he is not None and window:
        mean = round(100.0 * (he.generator_cpu - hs.generator_cpu) / window, 1)
    machine = [r["machine_cpu_percent"] for r in hold if r["machine_cpu_percent"] is not None]
    server = [r["server_cpu_percent"] or 0.0 for r in hold]
    others = [
        m - g - s
        for m, g, s in zip(
            machine, (r["generator_cpu_percent"] for r in hold), server, strict=False
        )
    ]
    return {
        "cpu_percent_mean": mean,
        "cpu_percent_max": max((r["generator_cpu_percent"] for r in hold), default=None),
        "loop_lag_ms_max": max((r["generator_loop_lag_ms"] for r in hold), default=None),
        "loop_stalls_over_100ms": sum(r["generator_loop_lag_ms"] > 100 for r in hold),
        "gc_ms_total": round(sum(r["generator_gc_ms"] for r in hold), 1),
        "cpus": os.cpu_count(),
        "machine_cpu_percent_mean": _round(sum(machine) / len(machine)) if machine else None,
        "other_processes_cpu_percent_mean": _round(max(0.0, sum(others) / len(others)))
        if others
        else None,
        "note": "CPU in percent of one core; the generator is one Python process (one core); "
        "loop lag: how late its event loop ran a 20 ms timer, worst per second",
    }


def _server(data: RunData, hs: Snapshot | None, he: Snapshot | None) -> dict[str, Any]:
    before = hs.scrape if hs is not None else None
    after = he.scrape if he is not None else None
    if before is None or after is None:
        return {"metrics_available": False, "error": data.server_error}
    rss = [r["server_rss_mb"] for r in data.timeline if r["server_rss_mb"] is not None]
    cpus = [r["server_cpu_percent"] for r in data.timeline if r["server_cpu_percent"] is not None]
    seconds = after.at - before.at
    result: dict[str, Any] = {
        "metrics_available": True,
        "cpu_percent_mean": _round(cpu_percent(before, after)),
        "cpu_percent_max": max(cpus, default=None),
        "rss_mb_start": rss[0] if rss else None,
        "rss_mb_max": max(rss, default=None),
        "participants": after.get("sfu_participants", -1.0),
        "packets_in_per_s": round(_rate(before, after, "sfu_rtp_packets_received_total", seconds)),
        "packets_forwarded_per_s": round(
            _rate(before, after, "sfu_rtp_packets_forwarded_total", seconds)
        ),
        "nacks_received": after.total("sfu_nacks_received_total"),
        "plis_sent": after.total("sfu_plis_sent_total"),
    }
    buckets = [
        (bound, count - dict(before.buckets()).get(bound, 0.0)) for bound, count in after.buckets()
    ]
    for q in (0.5, 0.99):
        value = histogram_quantile(q, buckets)
        result[f"forwarding_us_p{round(q * 100)}"] = _round(value * 1e6 if value else None)
    if data.server_after is not None:
        result["participants_after_leaving"] = data.server_after.get("sfu_participants", -1.0)
    return result


def _rate(before: Any, after: Any, name: str, seconds: float) -> float:
    return (after.total(name) - before.total(name)) / seconds if seconds > 0 else 0.0


def _round(value: float | None, digits: int = 1) -> float | None:
    return round(value, digits) if value is not None else None


def _warnings(report: dict[str, Any]) -> list[str]:
    warnings = []
    joins = report["joins"]
    if joins["failed"] or joins["succeeded"] < joins["attempted"]:
        warnings.append(f"{joins['attempted'] - joins['succeeded']} participants failed to join")
    generator = report["generator"]
    if (generator["cpu_percent_mean"] or 0) >= GENERATOR_SATURATED:
        warnings.append(
            f"the load generator used {generator['cpu_percent_mean']} % of a core: it is "
            "saturated, so latency, loss and freezes may be its own; use fewer participants "
            "or run several generators"
        )
    hold = report["packets"]["hold"]
    if (generator["loop_lag_ms_max"] or 0) > 100:
        warnings.append(
            f"the load generator's event loop stalled (worst {generator['loop_lag_ms_max']} ms "
            f"late, {generator['loop_stalls_over_100ms']} seconds with a stall > 100 ms): "
            "latency and freezes in those seconds include the generator's own delay"
        )
    if (generator["other_processes_cpu_percent_mean"] or 0) > 20:
        warnings.append(
            f"other processes on this machine used {generator['other_processes_cpu_percent_mean']}"
            " % of a core on average: server and generator competed with them"
        )
    if hold and hold["loss_percent"] > 1.0:
        warnings.append(f"{hold['loss_percent']} % of the packets were lost")
    if report["time_to_first_frame_ms"].get("missing"):
        warnings.append(
            f"{report['time_to_first_frame_ms']['missing']} subscriber/publisher pairs never "
            "got a video frame"
        )
    tracks = report["tracks"]
    if tracks["participants_missing_any"]:
        warnings.append(
            f"{tracks['participants_missing_any']} participants missed {tracks['missing']} "
            "tracks published in their room"
        )
    sdp = report["sdp"]
    if sdp["sent_over_budget"] or sdp["server_errors"]:
        warnings.append(
            f"SDP: {sdp['sent_over_budget']} participants sent an SDP over its budget; "
            f"server errors {sdp['server_errors']}"
        )
    layers = report["layers"]["on_expected_layer"]
    if layers["matched"] < layers["checked"]:
        warnings.append(
            f"{layers['checked'] - layers['matched']} of {layers['checked']} video streams "
            "ended on another layer than the one asked for (or the best)"
        )
    if report["freezes"]["count"]:
        warnings.append(f"{report['freezes']['count']} video freezes (gaps > 500 ms)")
    if not report["server"]["metrics_available"]:
        warnings.append(f"no server metrics: {report['server'].get('error')}")
    return warnings


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
