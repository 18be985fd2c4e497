"""The report per server URL (node): what the participants that joined through each one
experienced, and what that node's ``/metrics`` said.

A participant belongs to the node it joined through. In a cluster its room may be hosted by
another node, which relays its signaling; its media then goes to the room's node. So a node's
joins, packets and latency are those of its participants, and its server numbers are those of
the rooms it hosts.
"""

from __future__ import annotations

from typing import Any

from loadtest.participant import LoadParticipant
from loadtest.runner import NodeCounts, RunData, Snapshot, by_node
from loadtest.server import Scrape, cpu_percent
from loadtest.stats import summary

FORWARDED = "sfu_rtp_packets_forwarded_total"


def build(data: RunData) -> list[dict[str, Any]]:
    config = data.config
    groups = by_node(data.participants, len(config.urls))
    return [
        {
            "url": url,
            "rooms": sum(config.node_of(room) == index for room in range(config.rooms)),
            "joins": joins(groups[index]),
            "packets": _packets(data, index, groups[index]),
            "latency_ms": summary(data.node_latencies[index], 1000.0)
            if index < len(data.node_latencies)
            else {"count": 0},
            "freezes": sum(
                s.freezes for p in groups[index] for s in p.streams.values() if s.kind == "video"
            ),
            "server": _server(data, index),
        }
        for index, url in enumerate(config.urls)
    ]


def joins(parts: list[LoadParticipant]) -> dict[str, Any]:
    """Joins attempted, made, failed, connected, their times and errors: the run's or a node's."""
    joined = [p for p in parts if p.joined_at is not None]
    errors: dict[str, int] = {}
    for p in parts:
        if p.error is not None:
            errors[p.error] = errors.get(p.error, 0) + 1
    return {
        "attempted": sum(p.join_started is not None for p in parts),
        "succeeded": len(joined),
        "failed": sum(p.state == "failed" for p in parts),
        "connected": sum(p.connected_at is not None for p in parts),
        "join_ms": summary([s for p in joined if (s := p.join_seconds) is not None], 1000.0, 1),
        "connect_ms": summary(
            [s for p in parts if (s := p.connect_seconds) is not None], 1000.0, 1
        ),
        "errors": errors,
    }


def _packets(data: RunData, index: int, parts: list[LoadParticipant]) -> dict[str, Any]:
    streams = [s for p in parts for s in p.streams.values()]
    whole_run = {
        "sent": sum(p.tx_packets for p in parts),
        "received": sum(s.packets for s in streams),
        "lost": sum(s.lost for s in streams),
        "frames": sum(s.frames for s in streams),
    }
    start, end = _counts(data, index)
    if start is None or end is None:
        return {"hold": None, "whole_run": whole_run}
    expected = end.rx_expected - start.rx_expected
    received = end.rx_packets - start.rx_packets
    lost = max(0, expected - received)
    hold = {
        "sent": end.tx_packets - start.tx_packets,
        "received": received,
        "lost": lost,
        "loss_percent": round(100.0 * lost / expected, 3) if expected else 0.0,
        "frames": end.rx_frames - start.rx_frames,
    }
    return {"hold": hold, "whole_run": whole_run}


def _counts(data: RunData, index: int) -> tuple[NodeCounts | None, NodeCounts | None]:
    hs, he = data.hold_start, data.hold_end
    if hs is None or he is None or index >= min(len(hs.nodes), len(he.nodes)):
        return None, None
    return hs.nodes[index], he.nodes[index]


def _server(data: RunData, index: int) -> dict[str, Any]:
    before = _scrape(data.hold_start, index)
    after = _scrape(data.hold_end, index)
    if before is None or after is None:
        error = data.server_errors[index] if index < len(data.server_errors) else None
        return {"metrics_available": False, "error": error}
    seconds = after.at - before.at
    forwarded = after.total(FORWARDED) - before.total(FORWARDED)
    cpu = cpu_percent(before, after)
    return {
        "metrics_available": True,
        "cpu_percent_mean": round(cpu, 1) if cpu is not None else None,
        # the rooms this node hosts, at the end of the hold (-1: not an aiosfu server)
        "rooms_hosted": round(after.get("sfu_rooms", -1.0)),
        "participants": round(after.get("sfu_participants", -1.0)),
        "packets_forwarded_per_s": round(forwarded / seconds) if seconds > 0 else 0,
    }


def _scrape(snapshot: Snapshot | None, index: int) -> Scrape | None:
    if snapshot is None or index >= len(snapshot.node_scrapes):
        return None
    return snapshot.node_scrapes[index]


def warnings(nodes: list[dict[str, Any]]) -> list[str]:
    """A node that some (or all) of its participants could not join through."""
    if len(nodes) < 2:
        return []
    result = []
    for node in nodes:
        joins = node["joins"]
        if joins["succeeded"] < joins["attempted"]:
            result.append(
                f"{joins['attempted'] - joins['succeeded']} of {joins['attempted']} participants "
                f"failed to join through {node['url']}"
            )
    return result
