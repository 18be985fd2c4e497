"""The picture of a run: bitrate, loss, latency and CPU over time, one panel each, and with
simulcast the layer the video streams received."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, NullFormatter

#: up to this many video streams, the layer panel draws each; above, counts per layer
STREAMS_DRAWN = 8


def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float("nan") if r.get(key) is None else float(r[key]) for r in rows]


def _shade_ramp(ax: Axes, ramp: float) -> None:
    if ramp > 0:
        ax.axvspan(0, ramp, color="0.92", zorder=0)


def plot(report: dict[str, Any], path: Path) -> None:
    rows = report["timeline"]
    config = report["config"]
    ramp = float(config["ramp_s"])
    t = _series(rows, "t")
    simulcast = bool(config.get("simulcast"))
    panels = 5 if simulcast else 4
    fig, axes = plt.subplots(
        panels, 1, figsize=(10, 2.75 * panels), sharex=True, constrained_layout=True
    )
    bitrate, loss, latency, cpu = axes[:4]
    fig.suptitle(
        f"aiosfu load test: {config['rooms']} rooms x {config['participants_per_room']} "
        f"participants ({config['publishers_per_room']} publishing per room), "
        f"{config['ramp_s']:g} s ramp + {config['hold_s']:g} s hold, "
        f"{report['started_at'][:19]}Z"
    )
    for ax in axes:
        _shade_ramp(ax, ramp)
        ax.grid(True, alpha=0.3)

    bitrate.plot(t, [v / 1000 for v in _series(rows, "rx_kbps")], label="received, all subscribers")
    bitrate.plot(t, [v / 1000 for v in _series(rows, "tx_kbps")], label="sent, all publishers")
    bitrate.set_ylabel("Mbit/s")
    bitrate.set_ylim(bottom=0)
    bitrate.set_title("bitrate (grey: ramp-up)", loc="left", fontsize=10)
    joined = bitrate.twinx()
    joined.step(t, _series(rows, "joined"), where="post", color="0.5", ls=":", label="joined")
    joined.set_ylabel("participants joined")
    joined.set_ylim(bottom=0)
    lines = bitrate.get_legend_handles_labels()
    more = joined.get_legend_handles_labels()
    bitrate.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)

    loss.plot(t, _series(rows, "loss_percent"), color="tab:red")
    loss.set_ylabel("% of packets")
    loss.set_title("packet loss at the subscribers (sequence gaps)", loc="left", fontsize=10)
    loss.set_ylim(bottom=0)

    for key, label in (("latency_p50_ms", "p50"), ("latency_p95_ms", "p95")):
        latency.plot(t, _series(rows, key), label=label)
    latency.plot(t, _series(rows, "latency_p99_ms"), label="p99", alpha=0.6)
    latency.plot(
        t,
        [max(v, 0.1) for v in _series(rows, "generator_loop_lag_ms")],
        label="generator loop lag (worst)",
        color="0.5",
        ls=":",
    )
    latency.set_ylabel("ms")
    latency.set_yscale("log")
    latency.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    latency.yaxis.set_minor_formatter(NullFormatter())
    latency.set_title(
        "end-to-end latency, publisher send → subscriber receive", loc="left", fontsize=10
    )
    latency.legend(loc="upper right", fontsize=8)

    cpu.plot(t, _series(rows, "server_cpu_percent"), label="server", color="tab:purple")
    cpu.plot(t, _series(rows, "generator_cpu_percent"), label="load generator", color="tab:gray")
    cpu.plot(t, _series(rows, "machine_cpu_percent"), label="whole machine", color="k", lw=0.8)
    cpu.axhline(100, color="k", lw=0.5, ls="--")
    if report["generator"]["cpus"]:
        cpu.axhline(100 * report["generator"]["cpus"], color="k", lw=0.5, ls="--")
    cpu.set_ylabel("% of one core")
    cpu.set_xlabel("" if simulcast else "seconds since start")
    cpu.set_title("CPU (and server memory)", loc="left", fontsize=10)
    cpu.set_ylim(bottom=0)
    memory = cpu.twinx()
    memory.plot(t, _series(rows, "server_rss_mb"), color="tab:green", ls="--", label="server RSS")
    memory.set_ylabel("server RSS, MB")
    rss = [v for v in _series(rows, "server_rss_mb") if not math.isnan(v)]
    memory.set_ylim(0, max(rss, default=1.0) * 1.4)
    lines = cpu.get_legend_handles_labels()
    more = memory.get_legend_handles_labels()
    cpu.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)

    if simulcast:
        streams = report["layers"]["streams"]
        if 0 < len(streams) <= STREAMS_DRAWN:
            _stream_layers(axes[4], streams, config["simulcast"], t[-1] if t else 0.0)
        else:
            _layers(axes[4], rows, t)

    fig.savefig(path, dpi=100)
    plt.close(fig)


def _layers(ax: Axes, rows: list[dict[str, Any]], t: list[float]) -> None:
    """Video streams by the layer they got frames of, per second, stacked small to large."""
    labels: set[str] = set()
    for row in rows:
        labels.update(row.get("video_layers") or {})
    ordered = sorted(labels, key=lambda label: math.prod(int(v) for v in label.split("x")))
    series = [
        [float((r.get("video_layers") or {}).get(label, 0)) for r in rows] for label in ordered
    ]
    if series:
        ax.stackplot(t, *series, labels=ordered, step="post", alpha=0.8)
        ax.legend(loc="upper left", fontsize=8)
    switches = _series(rows, "layer_switches")
    ax.plot(t, switches, color="k", ls=":", drawstyle="steps-post", label="switches in the second")
    ax.set_ylabel("video streams")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds since start")
    ax.set_title(
        "layer received (keyframe size; dotted: layer switches per second)", loc="left", fontsize=10
    )


def _stream_layers(ax: Axes, streams: list[dict[str, Any]], order: list[str], end: float) -> None:
    """The layer each video stream got over time, one step line per stream."""
    rank = {label: index for index, label in enumerate(order)}
    for number, item in enumerate(streams):
        changes = item["changes"]
        times = [float(t) for t, _ in changes] + [max(end, float(changes[-1][0]))]
        levels = [rank.get(size, -1) for _, size in changes]
        offset = (number - (len(streams) - 1) / 2) * 0.04  # overlapping lines stay visible
        ax.step(
            times,
            [v + offset for v in [*levels, levels[-1]]],
            where="post",
            label=f"{item['subscriber']} ← {item['publisher']}",
        )
    ax.set_yticks(range(len(order)), order)
    ax.set_ylim(-0.5, len(order) - 0.5)
    ax.set_ylabel("layer")
    ax.set_xlabel("seconds since start")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("layer each subscriber received (keyframe size)", loc="left", fontsize=10)
