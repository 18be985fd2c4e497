"""Worker processes, one per core, each holding some rooms (issue 13, docs/design/scale-out-plan.md
§3.1 and §3.5).

:class:`WorkerPool` starts ``python -m sfu.worker`` N times, each on one end of a UNIX socket
pair, and talks to each through a :class:`~sfu.remote.proxy.RemoteRoomService`; together with
:class:`~signaling.rooms.RoomRouter` it is what ``sfu serve --workers N`` puts behind the
signaling. A worker is lost when its process exits, its stream ends, or it sends no ``load``
frame for :data:`HUNG_AFTER` seconds (a stuck event loop: it is killed). Its sessions then end
with ``reconnect`` (the proxy's doing), the router forgets its rooms, and the pool starts it
again at once — after 1, 2, 4 … 30 s while it keeps dying within :data:`STABLE_AFTER` seconds of
its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from pydantic import TypeAdapter

from sfu import api
from sfu.config import MediaConfig
from sfu.log import LogFormat
from sfu.remote.frames import read_frame, write_frame
from sfu.remote.proxy import RemoteRoomService
from signaling.placement import WorkerLoad, smoothed

log = structlog.get_logger("signaling.workers")

#: A worker silent this long (s) is taken as hung and killed.
HUNG_AFTER = 5.0
#: A worker that ran this long (s) before dying is restarted at once.
STABLE_AFTER = 10.0
MAX_BACKOFF = 30.0
#: How long a starting worker may take to say it is ready (s).
READY_TIMEOUT = 30.0
#: How long a worker asked to stop may take before it is killed (s).
STOP_TIMEOUT = 10.0
#: How often each worker's metrics are fetched for the supervisor's /metrics (s).
METRICS_INTERVAL = 1.0


@dataclass
class Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    service: RemoteRoomService | None = None
    pid: int | None = None
    started: float = 0.0
    last_load: float = 0.0
    cpu: float | None = None
    packets_out: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    backoff: float = 0.0
    up: bool = False
    #: its /metrics (exposition text) as last fetched, at most METRICS_INTERVAL old
    metrics: str = ""


class WorkerPool:
    """``count`` worker processes behind :class:`~signaling.rooms.RoomRouter`'s interface."""

    def __init__(
        self,
        count: int,
        config: MediaConfig,
        *,
        log_format: LogFormat = "console",
        log_level: str = "info",
        on_lost: Callable[[int], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workers = [Worker(i) for i in range(count)]
        self._config = config
        self._log = {"format": log_format, "level": log_level}
        self.on_lost = on_lost
        self._clock = clock
        self._watchers: set[asyncio.Task[None]] = set()
        self._closing = False
        #: no new room goes to any worker (the server drains before it stops)
        self.draining = False
        self._metrics_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start every worker and wait until each is ready (RuntimeError if one is not: the
        others are stopped first, so none is left to find its supervisor gone)."""
        results = await asyncio.gather(
            *(self._start(w) for w in self.workers), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await self.close()
            raise failed[0]
        self._metrics_task = asyncio.ensure_future(self._fetch_metrics())

    async def _fetch_metrics(self) -> None:
        while not self._closing:
            for worker in self.workers:
                if worker.up and worker.service is not None:
                    try:
                        text = await worker.service.call("metrics", {})
                    except api.SfuError:
                        continue  # lost meanwhile: its watcher acts
                    worker.metrics = text if isinstance(text, str) else ""
            await asyncio.sleep(METRICS_INTERVAL)

    # --- what the router asks ---

    def loads(self) -> Sequence[WorkerLoad]:
        return [
            WorkerLoad(w.index, w.up, self.draining, cpu=w.cpu or 0.0, packets_out=w.packets_out)
            for w in self.workers
        ]

    def service(self, index: int) -> api.RoomService | None:
        worker = self.workers[index]
        return worker.service if worker.up else None

    def exposition(self, index: int) -> str | None:
        """Worker ``index``'s metrics as it gave them (at most METRICS_INTERVAL old): None if
        there is no such worker, "" while it is down or has not answered yet."""
        if not 0 <= index < len(self.workers):
            return None
        worker = self.workers[index]
        return worker.metrics if worker.up else ""

    def describe(self) -> list[dict[str, Any]]:
        """Each worker as /healthz shows it."""
        return [
            {
                "index": w.index, "up": w.up, "draining": self.draining, "pid": w.pid,
                "restarts": w.restarts,
                "cpu": None if w.cpu is None else round(w.cpu, 3), **w.counts,
            }
            for w in self.workers
        ]  # fmt: skip

    # --- a worker's life ---

    async def _start(self, worker: Worker) -> None:
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sfu.worker", "--index", str(worker.index),
                "--channel-fd", str(theirs.fileno()), pass_fds=(theirs.fileno(),),
            )  # fmt: skip
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        write_frame(writer, self._configure(worker.index))
        await writer.drain()
        try:
            ready = await asyncio.wait_for(read_frame(reader), READY_TIMEOUT)
        except (TimeoutError, ValueError) as exc:
            process.kill()
            writer.close()
            raise RuntimeError(f"worker {worker.index} did not start: {exc!r}") from None
        if ready is not None and ready.get("op") == "failed":
            writer.close()
            await self._stop(process)  # it exits by itself; bounded all the same
            raise RuntimeError(f"worker {worker.index}: {ready.get('error')}")
        if ready is None or ready.get("op") != "ready":
            process.kill()
            writer.close()
            raise RuntimeError(f"worker {worker.index} did not start (exit {process.returncode})")
        service = RemoteRoomService(reader, writer)
        service.on_notice = lambda frame: self._on_load(worker, frame)
        now = self._clock()
        worker.process, worker.service, worker.pid = process, service, process.pid
        worker.started = worker.last_load = now
        worker.cpu, worker.up = None, True
        log.info("worker started", index=worker.index, pid=process.pid, restarts=worker.restarts)
        watcher = asyncio.ensure_future(self._watch(worker, process, service))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    def _configure(self, index: int) -> dict[str, Any]:
        """Worker ``index``'s first frame: the media configuration, its UDP port its own
        (``--udp-port N``: N + index; 0 stays 0, an ephemeral port per worker)."""
        config = self._config
        if config.udp_port:
            config = dataclasses.replace(config, udp_port=config.udp_port + index)
        media = TypeAdapter(MediaConfig).dump_python(config, mode="json")
        return {"op": "configure", "media": media, "log": self._log}

    def _on_load(self, worker: Worker, frame: Mapping[str, Any]) -> None:
        if frame.get("op") != "load":
            return
        now = self._clock()
        cpu, packets = frame.get("cpu"), frame.get("packetsOut")
        if isinstance(cpu, int | float) and isinstance(packets, int | float):
            worker.cpu = smoothed(worker.cpu, float(cpu), now - worker.last_load)
            worker.packets_out = float(packets)
        worker.counts = {
            k: v for k in ("rooms", "participants", "tracks") if isinstance(v := frame.get(k), int)
        }
        worker.last_load = now

    async def _watch(
        self, worker: Worker, process: asyncio.subprocess.Process, service: RemoteRoomService
    ) -> None:
        lost = asyncio.Event()
        service.on_lost = lost.set
        exited = asyncio.ensure_future(process.wait())
        waiting = asyncio.ensure_future(lost.wait())
        try:
            while not exited.done() and not lost.is_set():
                await asyncio.wait({exited, waiting}, timeout=1.0, return_when="FIRST_COMPLETED")
                if self._clock() - worker.last_load > HUNG_AFTER and process.returncode is None:
                    log.error("worker hung: killed", index=worker.index, pid=process.pid)
                    process.kill()
        finally:
            waiting.cancel()
        worker.up, worker.metrics = False, ""  # a dead process's counters are not served
        if self._closing:
            return  # close() stops it, in order
        if process.returncode is None:
            process.kill()
        await process.wait()
        await service.aclose()  # every session of it: SessionClosed("reconnect")
        log.error(
            "worker lost", index=worker.index, pid=process.pid, exit=process.returncode,
            ran=round(self._clock() - worker.started, 1),
        )  # fmt: skip
        if self.on_lost is not None:
            self.on_lost(worker.index)
        await self._restart(worker)

    async def _restart(self, worker: Worker) -> None:
        quick = self._clock() - worker.started < STABLE_AFTER
        worker.backoff = min(MAX_BACKOFF, max(1.0, worker.backoff * 2)) if quick else 0.0
        while not self._closing:
            if worker.backoff:
                await asyncio.sleep(worker.backoff)
            worker.restarts += 1
            try:
                await self._start(worker)
                return
            except (RuntimeError, OSError) as exc:
                log.error("worker restart failed", index=worker.index, error=str(exc))
                worker.backoff = min(MAX_BACKOFF, max(1.0, worker.backoff * 2))

    @staticmethod
    async def _stop(process: asyncio.subprocess.Process) -> None:
        for stop in (None, signal.SIGTERM, signal.SIGKILL):
            if process.returncode is not None:
                return
            if stop is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT / 2)

    async def close(self, reason: str = "server-shutdown") -> None:
        """End every session (``reason``), then every worker (SIGTERM, SIGKILL if it lingers)."""
        self._closing = True
        if self._metrics_task is not None:
            self._metrics_task.cancel()
        services = [w.service for w in self.workers if w.up and w.service is not None]
        await asyncio.gather(
            *(s.close(reason) for s in services), return_exceptions=True
        )  # each listener got SessionClosed(reason) first
        for service in services:
            await service.aclose()
        # the stream's end is the worker's cue to close its rooms and exit; a signal only if not
        await asyncio.gather(*(self._stop(w.process) for w in self.workers if w.process))
        for watcher in list(self._watchers):
            watcher.cancel()
        log.info("workers stopped", pids=[w.pid for w in self.workers], parent=os.getpid())


class WorkerCollector(Collector):
    """The workers' metrics in the supervisor's registry: every sample gains ``worker="k"``, one
    family per name (``sum without (worker)`` adds them up in PromQL), and the pool's own:
    ``sfu_workers_up``, ``sfu_worker_restarts_total``. The supervisor's own process metrics
    (``own``: its CPU, memory, descriptors) join the same families as ``worker="supervisor"``,
    so that a sum over ``worker`` is the whole server."""

    def __init__(self, pool: WorkerPool, own: Collector | None = None) -> None:
        self._pool = pool
        self._own = own

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}

        def merge(label: str, collected: Iterable[Metric]) -> None:
            for family in collected:
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                merged.samples.extend(
                    s._replace(labels={**s.labels, "worker": label}) for s in family.samples
                )

        if self._own is not None:
            merge("supervisor", self._own.collect())
        for worker in self._pool.workers:
            if worker.metrics:
                merge(str(worker.index), text_string_to_metric_families(worker.metrics))
        yield from families.values()
        up = GaugeMetricFamily("sfu_workers_up", "Worker processes up.", labels=["worker"])
        restarts = CounterMetricFamily(
            "sfu_worker_restarts", "Worker processes started again after one was lost.",
            labels=["worker"],
        )  # fmt: skip
        for worker in self._pool.workers:
            up.add_metric([str(worker.index)], 1.0 if worker.up else 0.0)
            restarts.add_metric([str(worker.index)], worker.restarts)
        yield up
        yield restarts
