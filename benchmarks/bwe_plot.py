"""The picture of one bandwidth scenario (``benchmarks/bwe_scenarios.py``): bitrates with the
link limit, the layer each subscriber decoded, and frame rate with the link's drops."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

COLOURS = {"shaped": "tab:red", "unshaped": "tab:blue"}


def _mbps(values: list[Any]) -> list[float]:
    return [math.nan if v is None else v / 1e6 for v in values]


def _steps(ax: Axes, events: list[dict[str, Any]], key: str, end: float, **style: Any) -> None:
    points = [(e["t"], e[key]) for e in events if isinstance(e.get(key), int | float)]
    if points:
        t = [p[0] for p in points] + [end]
        v = [p[1] / 1e6 for p in points] + [points[-1][1] / 1e6]
        ax.step(t, v, where="post", **style)


def plot(report: dict[str, Any], path: Path) -> None:
    series, events = report["series"], report["events"]
    t = series["t"]
    end = t[-1] if t else 0.0
    layers = report["layers"]
    top = max(layer["bps"] for layer in layers)
    fig, (rate, layer, frames) = plt.subplots(
        3, 1, figsize=(10, 8.5), sharex=True, height_ratios=(3, 1.3, 1.5), constrained_layout=True
    )
    ceiling = 2.2 * top / 1e6
    limit = [ceiling * 2 if v is None else v / 1e6 for v in series["limit_bps"]]
    rate.step(t, limit, where="post", color="black", linestyle="--", label="link limit")
    for entry in layers:
        rate.axhline(entry["bps"] / 1e6, color="0.8", linewidth=0.8, zorder=0)
        rate.text(end, entry["bps"] / 1e6, f" {entry['rid']}", va="center", color="0.5")
    for name, colour in COLOURS.items():
        if name not in series:
            continue
        faint = name == "unshaped"
        width = 0.9 if faint else 1.6
        alpha = 0.6 if faint else 1.0
        rate.plot(t, _mbps(series[name]["rx_bps"]), color=colour, linewidth=width, alpha=alpha,
                  label=f"{name}: received")  # fmt: skip
        _steps(rate, events.get(name, []), "estimateBps", end, color=colour, linestyle=":",
               linewidth=width + 0.4, alpha=alpha, label=f"{name}: estimate")  # fmt: skip
        _steps(rate, events.get(name, []), "allocatedBps", end, color=colour, linestyle="-.",
               linewidth=width, alpha=alpha, label=f"{name}: allocated")  # fmt: skip
        index = {entry["rid"]: i for i, entry in enumerate(layers)}
        offset = 0.08 if faint else -0.08
        layer.scatter(
            t, [math.nan if r is None else index[r] + offset for r in series[name]["layer"]],
            s=6, color=colour, label=name,
        )  # fmt: skip
        frames.plot(t, series[name]["fps"], color=colour, linewidth=width, label=f"{name} fps")
    rate.set_ylim(0, ceiling)
    rate.set_ylabel("Mbit/s")
    rate.legend(loc="upper right", fontsize=7, ncol=2)
    title = f"{report['scenario']} ({report['commit']}, {report['at']})"
    if report.get("loss"):
        title += f", {report['loss']:.0%} random loss on the shaped subscriber"
    rate.set_title(title)
    layer.set_yticks(range(len(layers)), [entry["rid"] for entry in layers])
    layer.set_ylim(-0.5, len(layers) - 0.5)
    layer.set_ylabel("layer decoded")
    layer.legend(loc="lower right", fontsize=7)
    frames.set_ylabel("frames/s")
    frames.set_xlabel("seconds")
    drops = frames.twinx()
    link = report["link"]
    dt = [(b["t"], (b["drops"] - a["drops"]) / max(1e-3, b["t"] - a["t"]))
          for a, b in itertools.pairwise(link) if b["drops"] >= a["drops"]]  # fmt: skip
    drops.plot([p[0] for p in dt], [p[1] for p in dt], color="0.4", linewidth=0.8)
    drops.set_ylabel("link drops/s", color="0.4")
    frames.legend(loc="lower left", fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
