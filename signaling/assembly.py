"""What ``sfu serve`` puts behind its signaling (issue 13): the room service, its metrics, its
part of ``/healthz``, and how to stop it.

- ``--workers 1``: one in-process :class:`~sfu.service.Sfu`, as before workers existed.
- ``--workers N``: N worker processes (:class:`~signaling.workers.WorkerPool`) behind a
  :class:`~signaling.rooms.RoomRouter`; their metrics in the supervisor's registry with a
  ``worker`` label.
- ``--redis URL``: besides, this node's place in a cluster: the room directory, a node link
  server on ``--node-address`` and links to the others, behind a
  :class:`~signaling.cluster.router.ClusterRouter`.

Each has a :class:`~signaling.drain.Drain` (``--drain-timeout``): when it starts, the workers take
no new room and the node's registration says ``draining``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sfu import api
from sfu.config import MediaConfig
from sfu.log import LogFormat, get_logger
from signaling.app import SHUTDOWN_REASON
from signaling.cluster.directory import Directory, NodeInfo
from signaling.cluster.links import LinkServer, NodeLinks
from signaling.cluster.router import ClusterRouter
from signaling.drain import Drain, DrainingRooms
from signaling.placement import smoothed
from signaling.rooms import RoomRouter
from signaling.workers import WorkerCollector, WorkerPool

log = get_logger()


@dataclass(frozen=True)
class ClusterOptions:
    redis_url: str
    #: host:port this node's link server listens on, as the other nodes reach it
    node_address: str
    secret: bytes
    #: the signaling URL clients may be sent to (shown to the others; informative)
    public_url: str = ""
    prefix: str = "sfu:"


async def _nothing() -> None:
    return None


@dataclass
class Assembly:
    service: api.RoomService
    registry: CollectorRegistry
    health: Callable[[], Mapping[str, Any]]
    #: the in-process service's "set up, about to serve" (sfu.service.Sfu.serving), if any
    serving: Callable[[], None] = lambda: None
    #: what opens the in-process media plane's shared parts (the UDP port): aiohttp startup
    start: Callable[[], Awaitable[None]] = _nothing
    drain: Drain = field(default_factory=Drain)
    #: worker k's metrics as it gave them (None: no worker k; "": none now); None: no workers
    worker_metrics: Callable[[int], str | None] | None = None
    #: the bye reason of the sessions when the server stops (a cluster's: join again elsewhere)
    shutdown_reason: str = SHUTDOWN_REASON
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    async def close(self) -> None:
        """After the app closed its sessions: the cluster's parts, then the workers."""
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                await closer()


class _CpuMeter:
    """This process's CPU use (cores), smoothed: an in-process node's load."""

    def __init__(self) -> None:
        self._at, self._cpu, self.value = time.monotonic(), time.process_time(), 0.0

    def read(self) -> float:
        now, cpu = time.monotonic(), time.process_time()
        if now - self._at >= 0.5:
            sample = (cpu - self._cpu) / (now - self._at)
            self.value = smoothed(self.value, sample, now - self._at)
            self._at, self._cpu = now, cpu
        return self.value


async def assemble(
    config: MediaConfig,
    *,
    workers: int = 1,
    cluster: ClusterOptions | None = None,
    log_format: LogFormat = "console",
    log_level: str = "info",
) -> Assembly:
    from sfu.service import Sfu

    if workers <= 1:
        sfu = Sfu(config)
        meter = _CpuMeter()
        assembly = Assembly(
            sfu, sfu.metrics_registry(), lambda: {}, serving=sfu.serving, start=sfu.start
        )

        def load() -> tuple[float, float, int]:
            return meter.read(), 0.0, len(sfu.rooms_by_id)

    else:
        pool = WorkerPool(workers, config, log_format=log_format, log_level=log_level)
        router = RoomRouter(pool)
        pool.on_lost = router.lost
        await pool.start()
        registry = CollectorRegistry()
        registry.register(WorkerCollector(pool, own=ProcessCollector(registry=None)))

        def health() -> Mapping[str, Any]:
            described = pool.describe()
            up = sum(w["up"] for w in described)
            status = "ok" if up == len(described) else "degraded" if up else "down"
            return {"status": status, "workers": described}

        assembly = Assembly(router, registry, health, worker_metrics=pool.exposition)
        assembly._closers.append(pool.close)

        async def drain_workers() -> None:
            pool.draining = True

        assembly.drain.on_start(drain_workers)

        def load() -> tuple[float, float, int]:
            loads = pool.loads()
            rooms = sum(w.counts.get("rooms", 0) for w in pool.workers)
            return sum(w.cpu for w in loads), sum(w.packets_out for w in loads), rooms

    if cluster is not None:
        await _join_cluster(assembly, cluster, load)
    return assembly


async def _join_cluster(
    assembly: Assembly, options: ClusterOptions, load: Callable[[], tuple[float, float, int]]
) -> None:
    node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    drain = assembly.drain
    link = [options.node_address]  # with its port once bound (port 0: an ephemeral one)

    def describe() -> NodeInfo:
        cpu, packets, rooms = load()
        return NodeInfo(
            node_id, options.public_url, link[0], cpu=round(cpu, 3),
            packets_out=round(packets), rooms=rooms, draining=drain.draining,
        )  # fmt: skip

    directory = Directory(options.redis_url, describe, prefix=options.prefix)

    async def address_of(peer: str) -> str | None:
        return next((n.link for n in await directory.nodes() if n.node_id == peer), None)

    links = NodeLinks(node_id, options.secret, address_of)
    router = ClusterRouter(assembly.service, directory, links)
    # joins from the other nodes count into the drain as this node's own WebSockets' do
    server = LinkServer(node_id, options.secret, DrainingRooms(router.serve_link(), drain))
    host, _, port = options.node_address.rpartition(":")
    bound_host, bound_port = await server.start(host.strip("[]"), int(port))
    link[0] = f"{host}:{bound_port}"
    await directory.start()
    log.info("node in the cluster", node=node_id, link=link[0], bound=bound_host)
    local_health = assembly.health

    def health() -> Mapping[str, Any]:
        report = {**local_health(), "node": node_id, "redis": "up" if directory.up else "down"}
        if not directory.up and report.get("status", "ok") == "ok":
            report["status"] = "degraded"  # running rooms go on; new rooms are refused
        return report

    assembly.service, assembly.health = router, health
    assembly.shutdown_reason = "reconnect"  # its rooms go on on another node
    drain.on_start(directory.announce)
    assembly.registry.register(_ClusterCollector(directory))
    assembly._closers += [directory.close, server.close, links.close]


class _ClusterCollector(Collector):
    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    def collect(self) -> list[Metric]:
        up = GaugeMetricFamily("sfu_redis_up", "Whether the room directory (Redis) answers.")
        up.add_metric([], 1.0 if self._directory.up else 0.0)
        conflicts = GaugeMetricFamily(
            "sfu_room_claim_conflicts",
            "Rooms found claimed by another node when asserted again after Redis restarted.",
        )
        conflicts.add_metric([], self._directory.conflicts)
        return [up, conflicts]
