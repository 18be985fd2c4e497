"""Medians, the printed tables, and the JSON and PNG files of a benchmark run."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.cases import (
    AIOSFU_WORKERS,
    JANUS_FORWARDERS,
    LABELS,
    PERCENTILES,
    SFU_SERVE,
    Case,
    Trial,
)
from benchmarks.cases import percentile_key as pkey
from benchmarks.profile import summarize as summarize_profile

MEDIANS = (
    "cpu_us_per_packet",
    "forwarded_per_s",
    "server_cpu_pct",
    "lost",
    "ctx_switches_per_packet",
    "server_threads",
    "server_rss_mb",
    "publisher_cpu_pct",
    "subscribers_cpu_pct",
    "first_packet_ms",
    "other_cpu_pct",
    "system_pct",
)


def _median(values: Sequence[float]) -> float:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def summarize(
    trials: Sequence[Trial], cases: Sequence[Case], forwarders: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per case and forwarder: medians over its runs."""
    rows = []
    for case in cases:
        for forwarder in forwarders:
            runs = [t.as_dict() for t in trials if t.case == case.key and t.forwarder == forwarder]
            if not runs:
                continue
            row: dict[str, Any] = {"case": case.key, "label": case.label, "forwarder": forwarder}
            row["runs"] = len(runs)
            for name in MEDIANS:
                row[name] = _median([r[name] for r in runs])
            cpu = [r["cpu_us_per_packet"] for r in runs]
            row["cpu_us_min"], row["cpu_us_max"] = min(cpu), max(cpu)
            row["packets_per_core_s"] = 1e6 / row["cpu_us_per_packet"]
            row["expected"] = _median([r["expected"] for r in runs])
            row["loss_pct"] = _median([100 * r["lost"] / max(r["expected"], 1) for r in runs])
            row["latency_ms"] = {
                pkey(p): _median([r["latency_ms"][pkey(p)] for r in runs]) for p in PERCENTILES
            }
            sfu = [r["sfu_latency_ms"] for r in runs if r["sfu_latency_ms"]]
            row["sfu_latency_ms"] = (
                {pkey(p): _median([s[pkey(p)] for s in sfu]) for p in PERCENTILES} if sfu else None
            )
            row["send_lag_p99_us"] = _median([r["send_lag_us"]["p99"] for r in runs])
            if case.simulcast:
                row["layers"] = _layer_medians([r["layers"] for r in runs if r["layers"]])
            if any(r["workers"] for r in runs):  # sfu serve --workers N: each run's placement
                row["rooms_per_worker"] = [[w["rooms"] for w in r["workers"] or ()] for r in runs]
            rows.append(row)
    return rows


def _layer_medians(runs: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per simulcast layer over the runs: medians of the rates, the extremes of what one
    subscriber got, and every packet of another layer."""
    rows = []
    for layers in zip(*runs, strict=True):
        first = layers[0]
        rows.append(
            {
                "layer": first["layer"],
                "rid": first["rid"],
                "size": first["size"],
                "subscribers": first["subscribers"],
                "sent_per_s": _median([x["sent_per_s"] for x in layers]),
                "forwarded_per_s": _median([x["forwarded_per_s"] for x in layers]),
                "loss_pct": _median(
                    [100 * (1 - x["received"] / x["expected"]) for x in layers if x["expected"]]
                ),
                "per_subscriber_per_s": [
                    min(x["per_subscriber_per_s"][0] for x in layers),
                    max(x["per_subscriber_per_s"][1] for x in layers),
                ],
                "per_subscriber_kbit_s": [
                    min(x["per_subscriber_kbit_s"][0] for x in layers),
                    max(x["per_subscriber_kbit_s"][1] for x in layers),
                ],
                "received_by_layer": [
                    sum(x["received_by_layer"][i] for x in layers) for i in range(3)
                ],
                "other_layers": sum(x["other_layers"] for x in layers),
            }
        )
    return rows


def layer_table(summary: Sequence[dict[str, Any]]) -> list[str]:
    """The simulcast cases: per forwarder and layer, what went in and what each subscriber got."""
    rows = [r for r in summary if r.get("layers")]
    if not rows:
        return []
    out = [
        "\nSimulcast, per layer (medians): packets/s each publisher sent of the layer, "
        "subscribers asking for it, packets/s forwarded of it (all rooms), what one subscriber "
        "got (min-max over subscribers and runs), packets of the layer lost, and what its "
        "subscribers got of the other layers (all runs; must be 0)\n",
        "| case | forwarder | layer | in pkt/s | subscribers | fwd pkt/s | per subscriber pkt/s "
        "| per subscriber kbit/s | lost | packets of other layers (q / h / f) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for layer in row["layers"]:
            low, high = layer["per_subscriber_per_s"]
            kbit_low, kbit_high = layer["per_subscriber_kbit_s"]
            others = [
                "-" if i == layer["layer"] else f"{n:,}"
                for i, n in enumerate(layer["received_by_layer"])
            ]
            out.append(
                f"| {row['label']} | {row['forwarder']} | {layer['rid']} {layer['size']} | "
                f"{layer['sent_per_s']:,.0f} | {layer['subscribers']} | "
                f"{layer['forwarded_per_s']:,.0f} | {low:,.0f}-{high:,.0f} | "
                f"{kbit_low:,.0f}-{kbit_high:,.0f} | {_fmt(layer['loss_pct'], 3)} % | "
                + " / ".join(others)
                + " |"
            )
    return out


def progress(trial: Trial) -> None:
    d = trial.as_dict()
    print(
        f"  {trial.case:>9} run {trial.run + 1} {trial.forwarder:<14} "
        f"{d['cpu_us_per_packet']:6.2f} µs/pkt  {d['forwarded_per_s']:8.0f} pkt/s  "
        f"CPU {d['server_cpu_pct']:5.1f} %  lost {trial.lost:<6} "
        f"(socket drops: server {trial.udp_drops['server']}, "
        f"subscribers {trial.udp_drops['subscribers']}; {trial.udp_errors}; "
        f"SRTP rejected {trial.srtp_rejected})  "
        f"p50 {trial.latency_ms['p50']:.2f} p99 {trial.latency_ms['p99']:.2f} ms  "
        f"load CPU {trial.publisher_cpu_pct:.0f}+{trial.subscribers_cpu_pct:.0f} %  "
        f"others {trial.other_cpu_pct:.0f} %"
        + (
            "  per layer fwd "
            + " / ".join(f"{x['forwarded_per_s']:.0f}" for x in trial.layers)
            + f" pkt/s, other layers {sum(x['other_layers'] for x in trial.layers)}"
            if trial.layers
            else ""
        )
        + (f"  {'; '.join(trial.notes)}" if trial.notes else "")
        + (f"  (server process CPU {_supervisor_cpu_pct(trial):.0f} %)" if trial.workers else ""),
        flush=True,
    )


def _supervisor_cpu_pct(trial: Trial) -> float:
    """CPU of ``sfu serve --workers N`` itself, its workers' left out (WebSockets, relaying
    calls to the workers, their metrics), % of a core."""
    workers = sum(w["cpu_s"] or 0.0 for w in trial.workers or ())
    return 100 * (trial.server_cpu_s - workers) / trial.seconds


def _row(summary: list[dict[str, Any]], case: str, forwarder: str) -> dict[str, Any] | None:
    return next((r for r in summary if r["case"] == case and r["forwarder"] == forwarder), None)


def _ratio(ours: dict[str, Any] | None, theirs: dict[str, Any] | None, key: str) -> float | None:
    if ours is None or theirs is None or not theirs["latency_ms"][key]:
        return None
    return float(ours["latency_ms"][key] / theirs["latency_ms"][key])


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _ratio_pairs(forwarders: Sequence[str]) -> list[tuple[str, str]]:
    """The ratio rows: aiosfu to every other forwarder, each ``sfu serve --workers N`` to
    Janus."""
    pairs = [("aiosfu", f) for f in forwarders if f != "aiosfu" and "aiosfu" in forwarders]
    for mine in (f for f in forwarders if f in AIOSFU_WORKERS):
        pairs += [(mine, f) for f in forwarders if f in JANUS_FORWARDERS]
    return pairs


def tables(document: dict[str, Any]) -> str:
    meta, summary = document["meta"], document["summary"]
    cases: list[str] = meta["cases"]
    forwarders: list[str] = meta["forwarders"]
    labels = {r["case"]: r["label"] for r in summary}
    # as in the issue: the end-to-end latency of the heaviest case closes each row
    heaviest = max(cases, key=lambda c: Case.parse(c).forwarded_rate)
    out = [
        f"\nCPU of the forwarding process per forwarded packet, µs (median of {meta['runs']} x "
        f"{meta['seconds']:g} s; {meta['cpu']}, {meta['cores']} cores)\n",
        "| forwarder | "
        + " | ".join(labels.get(c, c) for c in cases)
        + f" | e2e latency p50 / p99 at {labels.get(heaviest, heaviest)} |",
        "|---|" + "---|" * (len(cases) + 1),
    ]
    for forwarder in forwarders:
        cells = []
        for case in cases:
            row = _row(summary, case, forwarder)
            cells.append(_fmt(row["cpu_us_per_packet"]) + " µs" if row else "-")
        row = _row(summary, heaviest, forwarder)
        lat = row["latency_ms"] if row else {"p50": None, "p99": None}
        cells.append(f"{_fmt(lat['p50'])} / {_fmt(lat['p99'])} ms")
        out.append(f"| {LABELS[forwarder]} | " + " | ".join(cells) + " |")
    for mine, other in _ratio_pairs(forwarders):
        cells = []
        for case in cases:
            ours, theirs = _row(summary, case, mine), _row(summary, case, other)
            ratio = (
                ours["cpu_us_per_packet"] / theirs["cpu_us_per_packet"] if ours and theirs else None
            )
            cells.append(f"{_fmt(ratio)}x")
        ours, theirs = _row(summary, heaviest, mine), _row(summary, heaviest, other)
        p50, p99 = _ratio(ours, theirs, "p50"), _ratio(ours, theirs, "p99")
        cells.append(f"{_fmt(p50)}x / {_fmt(p99)}x")
        out.append(f"| {mine} ÷ {LABELS[other]} | " + " | ".join(cells) + " |")
    out += [
        "\nPer case (medians): forwarded packets/s, forwarder CPU, loss, end-to-end latency "
        "(publisher send → subscriber receive), SFU-internal latency (aiosfu /metrics), "
        "share of the forwarder's CPU spent in the kernel, "
        "context switches per packet, load generator CPU (publisher + subscribers), CPU of "
        "other processes on the machine during the window\n",
        "| case | forwarder | fwd pkt/s | CPU % | µs/pkt (min-max) | pkt/s per core | lost | "
        "e2e p50 / p90 / p99 / p99.9 ms | SFU p50 / p99 ms | kernel % | ctxsw/pkt | threads | "
        "load CPU % | others % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        for forwarder in forwarders:
            row = _row(summary, case, forwarder)
            if row is None:
                continue
            lat = row["latency_ms"]
            sfu = row["sfu_latency_ms"]
            out.append(
                f"| {row['label']} | {forwarder} | {row['forwarded_per_s']:,.0f} | "
                f"{row['server_cpu_pct']:.1f} | {_fmt(row['cpu_us_per_packet'])} "
                f"({_fmt(row['cpu_us_min'])}-{_fmt(row['cpu_us_max'])}) | "
                f"{row['packets_per_core_s']:,.0f} | {row['lost']:.0f} ({row['loss_pct']:.3f} %) | "
                + " / ".join(_fmt(lat[pkey(p)]) for p in PERCENTILES)
                + " | "
                + (f"{_fmt(sfu['p50'], 3)} / {_fmt(sfu['p99'], 3)}" if sfu else "-")
                + f" | {_fmt(row.get('system_pct'), 0)}"
                + f" | {row['ctx_switches_per_packet']:.3f} | {row['server_threads']:.0f} | "
                f"{row['publisher_cpu_pct']:.0f} + {row['subscribers_cpu_pct']:.0f} | "
                f"{max(0.0, row['other_cpu_pct']):.0f} |"
            )
    out += layer_table(summary)
    served = [r for r in summary if r["forwarder"] in SFU_SERVE]
    if served and all(r["sfu_latency_ms"] is None for r in served):
        out.append(
            "\nSFU-internal latency: not measured (the server exposes no forwarding-latency "
            "histogram on /metrics)."
        )
    return "\n".join(out)


def profile_table(raw: Path, top: int = 15) -> str:
    profile = summarize_profile(raw.read_text(), top)
    out = [
        f"\npy-spy profile of aiosfu ({raw.name}, {profile.samples} samples on CPU)\n",
        "| self % | total % | function |",
        "|---|---|---|",
    ]
    totals = {e.function: e.share for e in summarize_profile(raw.read_text(), 10_000).by_total}
    for entry in profile.by_self:
        total = totals.get(entry.function, math.nan)
        out.append(f"| {100 * entry.share:.1f} | {100 * total:.1f} | `{entry.function}` |")
    return "\n".join(out)


def save(document: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = "forwarding-" + document["meta"]["started"].replace(":", "").replace("-", "")[:15]
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(document, indent=1, default=_jsonable) + "\n")
    paths = [json_path]
    png = plot(document, out / f"{stem}.png")
    if png is not None:
        paths.append(png)
    return paths


def _jsonable(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def plot(document: dict[str, Any], path: Path) -> Path | None:
    """CPU per packet and end-to-end latency, per case and forwarder; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (.venv/bin/pip install matplotlib): no PNG")
        return None
    meta, summary = document["meta"], document["summary"]
    cases: list[str] = meta["cases"]
    forwarders: list[str] = meta["forwarders"]
    labels = [
        next((r["label"] for r in summary if r["case"] == c), c).replace(" x ", "\n") for c in cases
    ]
    figure, (cpu_axis, latency_axis, loss_axis) = plt.subplots(
        1, 3, figsize=(17, 5), gridspec_kw={"width_ratios": [3, 3, 2]}
    )
    width = 0.8 / len(forwarders)
    for i, forwarder in enumerate(forwarders):
        rows = [_row(summary, c, forwarder) for c in cases]
        xs = [j + (i - (len(forwarders) - 1) / 2) * width for j in range(len(cases))]
        cpu = [r["cpu_us_per_packet"] if r else math.nan for r in rows]
        low = [r["cpu_us_per_packet"] - r["cpu_us_min"] if r else 0.0 for r in rows]
        high = [r["cpu_us_max"] - r["cpu_us_per_packet"] if r else 0.0 for r in rows]
        cpu_axis.bar(xs, cpu, width, yerr=[low, high], capsize=3, label=LABELS[forwarder])
        p50 = [r["latency_ms"]["p50"] if r else math.nan for r in rows]
        p99 = [r["latency_ms"]["p99"] if r else math.nan for r in rows]
        bars = latency_axis.bar(xs, p99, width, alpha=0.35)
        latency_axis.bar(
            xs,
            p50,
            width,
            color=bars.patches[0].get_facecolor(),
            alpha=1.0,
            label=LABELS[forwarder],
        )
        loss = [r["loss_pct"] if r else math.nan for r in rows]
        loss_axis.bar(xs, loss, width, label=LABELS[forwarder])
    latency_axis.set_yscale("log")
    for axis, title in (
        (cpu_axis, "forwarder CPU per forwarded packet (µs, lower is better)"),
        (latency_axis, "end-to-end latency, ms (log): p50 (solid), p99 (pale)"),
        (loss_axis, "packets lost, %"),
    ):
        axis.set_xticks(range(len(cases)), labels, fontsize=8)
        axis.set_title(title, fontsize=10)
        axis.grid(axis="y", alpha=0.3)
    cpu_axis.legend(fontsize=8)
    figure.suptitle(
        f"aiosfu vs Janus VideoRoom, {meta['started']} ({meta['commit']}), "
        f"{meta['cpu']} x {meta['cores']}, median of {meta['runs']} x {meta['seconds']:g} s",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
