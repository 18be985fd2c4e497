"""A real redis-server of the test's own on 127.0.0.1 (Debian's package, which
scripts/install-system-deps installs), no persistence: a restart loses every key, as a Redis
failover without replication does; and two real ``sfu serve --redis`` nodes on it.

The nodes listen on 127.0.0.2 and 127.0.0.3 (lo carries all of 127/8); their media stays on
127.0.0.1 (``--ice-host``), as in the other end-to-end tests.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import SfuServer, _start_server, _terminate

REDIS = shutil.which("redis-server")
START_TIMEOUT = 10.0


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS is not None
        argv = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert self.process.poll() is None, (self.workdir / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS is None:
        pytest.skip("redis-server is not installed (scripts/install-system-deps installs it)")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def node_args() -> tuple[str, ...]:
    """More ``serve`` options for both nodes; a test may parametrize it."""
    return ()


@pytest.fixture
def prefix() -> str:
    """The nodes' ``--redis-prefix``: their keys apart from other tests'."""
    return f"t{uuid.uuid4().hex[:6]}:"


@pytest.fixture
def nodes(
    redis_server: RedisServer, tmp_path: Path, node_args: tuple[str, ...], prefix: str
) -> Iterator[list[SfuServer]]:
    """Two nodes of one cluster, on 127.0.0.2 and 127.0.0.3."""
    secret = tmp_path / "cluster-secret"
    secret.write_text(uuid.uuid4().hex + "\n")
    started = []
    for host in ("127.0.0.2", "127.0.0.3"):
        workdir = tmp_path / host
        workdir.mkdir()
        args = ("--host", host, "--redis", redis_server.url, "--node-address", f"{host}:0",
                "--cluster-secret-file", str(secret), "--redis-prefix", prefix,
                *node_args)  # fmt: skip
        started.append(_start_server(workdir, "signaling.cli", args))
    try:
        yield started
    finally:
        for node in started:
            if node.process is not None and node.process.poll() is None:
                _terminate(node)


async def health(node: SfuServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(node.url + "/healthz") as response:
        report: dict[str, Any] = await response.json()
        return report


def ws(node: SfuServer) -> str:
    return node.url.replace("http", "ws", 1) + "/ws"
