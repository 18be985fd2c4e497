"""``sfu serve`` without ``--workers``: one worker process per core the server may run on (its
CPU affinity, as ``taskset`` or a container's cpuset sets it), and ``--workers 1`` (or a single
core) the rooms in the server's own process, as before workers existed (issue 13)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signaling.cli import default_workers

from .conftest import SfuServer, _start_server, _stop_server

pytestmark = pytest.mark.e2e


def test_the_default_counts_the_cores_this_process_may_use() -> None:
    cores = os.sched_getaffinity(0)
    assert default_workers() == len(cores)
    try:
        os.sched_setaffinity(0, {min(cores)})  # this thread only; the default follows it
        assert default_workers() == 1
    finally:
        os.sched_setaffinity(0, cores)


async def report(server: SfuServer) -> tuple[dict[str, Any], int]:
    """/healthz, and the status of /metrics?worker=0."""
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/healthz") as response:
            health: dict[str, Any] = await response.json()
        async with http.get(server.url + "/metrics?worker=0") as response:
            return health, response.status


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


@pytest.mark.parametrize("cores", ["all", "one"])
async def test_serve_without_workers_starts_one_per_core(tmp_path: Path, cores: str) -> None:
    mine = os.sched_getaffinity(0)
    cpus = mine if cores == "all" else {min(mine)}
    server = _start_server(tmp_path, workers=None, cpus=cpus)
    try:
        health, worker_metrics = await report(server)
        assert server.process is not None
        if len(cpus) > 1:
            pids = [w["pid"] for w in health["workers"]]
            assert [w["index"] for w in health["workers"]] == list(range(len(cpus)))
            assert sorted(pids) == sorted(children(server.process.pid))
            assert worker_metrics == 200
        else:  # one core: no worker process, the rooms in the server's
            assert "workers" not in health and children(server.process.pid) == []
            assert worker_metrics == 404
        assert health["status"] == "ok"
    finally:
        _stop_server(server)


async def test_workers_1_keeps_the_rooms_in_process_whatever_the_cores(tmp_path: Path) -> None:
    server = _start_server(tmp_path, workers="1")
    try:
        health, worker_metrics = await report(server)
        assert server.process is not None
        assert "workers" not in health and children(server.process.pid) == []
        assert health["status"] == "ok" and worker_metrics == 404
    finally:
        _stop_server(server)
