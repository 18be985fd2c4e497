"""The report as a table a person reads at a glance."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _v(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 100:
        value = int(value)
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


def _spread(stats: dict[str, Any], unit: str, keys: tuple[str, ...] = ("p50", "p95", "max")) -> str:
    if not stats.get("count"):
        return "no samples"
    shown = " · ".join(f"{k} {_v(stats.get(k))}" for k in keys)
    return f"{shown} {unit}  (n={stats['count']:,})"


#: streams shown one per line, at most
STREAMS_SHOWN = 12


def _layer_rows(table: Table, layers: dict[str, Any], simulcast: bool) -> None:
    """Which layer (keyframe size) the video streams got: at the end, per stream, how fast."""
    if not simulcast or not layers["video_streams"]:
        return
    by_layer = layers["by_layer"]
    expected = layers["on_expected_layer"]
    table.add_row(
        "layers received",
        ", ".join(f"{v['streams_at_end']} on {k}" for k, v in by_layer.items())
        + f" at the end ({expected['matched']} of {expected['checked']} on the layer asked "
        f"for, subscribers: {layers['subscriber_layers']}); {layers['switches']} switches",
    )
    table.add_row(
        "first frame per layer",
        "; ".join(
            f"{k} {_spread(v['first_frame_ms'], 'ms', ('p50', 'max'))}" for k, v in by_layer.items()
        ),
    )
    moved = layers["settings_to_layer_ms"]
    if moved.get("count") or moved["already"] or moved["missing"]:
        table.add_row(
            "setTrackSettings → layer",
            _spread(moved, "ms", ("p50", "p95", "max"))
            + f"; {moved['already']} already on it, {moved['missing']} never came, "
            f"{moved['pending']} asked in the last second",
        )
    streams = layers["streams"]
    if len(streams) <= STREAMS_SHOWN:
        for item in streams:
            asked = [layer for _, layer in item["asked_layers"]]
            shown = "best" if not asked else "asked " + ",".join(map(str, asked))
            path = " → ".join(f"{size} at {t:g} s" for t, size in item["changes"])
            table.add_row(f"  {item['subscriber']} ← {item['publisher']}", f"{shown}: {path}")


def _node_rows(table: Table, nodes: list[dict[str, Any]]) -> None:
    """One line per server URL, when there are several."""
    if len(nodes) < 2:
        return
    for node in nodes:
        joins, hold = node["joins"], node["packets"]["hold"] or {}
        latency, server = node["latency_ms"], node["server"]
        served = (
            f"hosts {server['rooms_hosted']} rooms, {server['participants']} participants: "
            f"CPU {_v(server['cpu_percent_mean'])} %, "
            f"{_v(server['packets_forwarded_per_s'])} forwarded/s"
            if server["metrics_available"]
            else f"no metrics ({server.get('error')})"
        )
        table.add_row(
            f"node {node['url']}",
            f"{node['rooms']} rooms joined through it: {joins['succeeded']}/"
            f"{joins['attempted']} joined, "
            f"{joins['failed']} failed; {_v(hold.get('received'))} packets received, "
            f"{_v(hold.get('lost'))} lost ({_v(hold.get('loss_percent'))} %), "
            f"{_v(hold.get('frames'))} frames; e2e "
            f"{_spread(latency, 'ms', ('p50', 'p95'))}; {node['freezes']} freezes; {served}",
        )


def render(report: dict[str, Any], console: Console) -> None:
    config = report["config"]
    joins = report["joins"]
    packets = report["packets"]["hold"] or {}
    freezes = report["freezes"]
    generator = report["generator"]
    server = report["server"]
    table = Table(
        title=(
            f"{config['rooms']} rooms x {config['participants_per_room']} participants "
            f"({config['publishers_per_room']} publishing), {config['ramp_s']:g} s ramp + "
            f"{config['hold_s']:g} s hold → {', '.join(config['urls'])}"
        ),
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "joins",
        f"{joins['succeeded']}/{joins['attempted']} joined, {joins['connected']} media "
        f"connected, {joins['failed']} failed",
    )
    for error, count in list(joins["errors"].items())[:3]:
        table.add_row("", f"[red]{count} x {error}[/red]")
    table.add_row("join time", _spread(joins["join_ms"], "ms"))
    table.add_row("join → media connected", _spread(joins["connect_ms"], "ms"))
    ttff = report["time_to_first_frame_ms"]
    missing = f", {ttff['missing']} never" if ttff.get("missing") else ""
    table.add_row("time to first frame", _spread(ttff, "ms") + missing)
    tracks = report["tracks"]
    table.add_row(
        "tracks received",
        f"{tracks['participants_checked'] - tracks['participants_missing_any']} of "
        f"{tracks['participants_checked']} participants got every track of their room "
        f"({_v(tracks['expected_per_participant'].get('max'))} at most; "
        f"{tracks['missing']} missing in all)",
    )
    sdp = report["sdp"]
    largest_in, largest_out = sdp["largest_received"] or {}, sdp["largest_sent"] or {}
    table.add_row(
        "largest SDP",
        f"received {_v(largest_in.get('chars'))} chars ({_v(largest_in.get('m_lines'))} "
        f"m-lines), sent {_v(largest_out.get('chars'))} ({_v(largest_out.get('m_lines'))} "
        f"m-lines); {sdp['sent_over_budget']} over budget, server errors "
        f"{sdp['server_errors'] or 'none'}",
    )
    table.add_row(
        "packets (hold)",
        f"{_v(packets.get('sent'))} sent by publishers, {_v(packets.get('received'))} received "
        f"by subscribers, {_v(packets.get('lost'))} lost ({_v(packets.get('loss_percent'))} %)",
    )
    table.add_row(
        "received per subscriber",
        _spread(report["bitrate_per_subscriber_kbps"], "kbit/s", ("min", "p50", "max")),
    )
    table.add_row("e2e latency", _spread(report["latency_ms"], "ms", ("p50", "p95", "p99", "max")))
    table.add_row(
        "freezes (> 500 ms)",
        f"{freezes['count']} in {freezes['streams_with_freezes']} of {freezes['video_streams']} "
        f"video streams, {freezes['frozen_s']} s frozen, "
        f"longest gap {freezes['longest_gap_ms']} ms",
    )
    _layer_rows(table, report["layers"], bool(config.get("simulcast")))
    _node_rows(table, report["nodes"])
    if server["metrics_available"]:
        table.add_row(
            "server",
            f"CPU {_v(server['cpu_percent_mean'])} % of a core (max {_v(server['cpu_percent_max'])}"
            f" %), RSS {_v(server['rss_mb_start'])} → max {_v(server['rss_mb_max'])} MB, "
            f"{_v(server['packets_in_per_s'])} packets/s in, "
            f"{_v(server['packets_forwarded_per_s'])} forwarded/s",
        )
        table.add_row(
            "server forwarding time",
            f"p50 {_v(server.get('forwarding_us_p50'))} µs · p99 "
            f"{_v(server.get('forwarding_us_p99'))} µs per packet per subscriber (sampled)",
        )
    else:
        table.add_row("server", f"no metrics ({server.get('error')})")
    table.add_row(
        "load generator",
        f"CPU {_v(generator['cpu_percent_mean'])} % of a core (max "
        f"{_v(generator['cpu_percent_max'])} %), event loop late by up to "
        f"{_v(generator['loop_lag_ms_max'])} ms, {_v(generator['gc_ms_total'])} ms in GC",
    )
    table.add_row(
        "machine",
        f"{generator['cpus']} cores, {_v(generator['machine_cpu_percent_mean'])} % of a core busy "
        f"on average, of which other processes {_v(generator['other_processes_cpu_percent_mean'])}"
        " %",
    )
    console.print(table)
    for warning in report["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
