"""End-to-end fixtures: the real server as a subprocess, and clients pinned to 127.0.0.1.

Set ``AIOSFU_E2E_URL=http://127.0.0.1:PORT`` to run the tests against a server started by hand
instead of a fresh subprocess per test (with ``--workers 1``, as the tests' own servers run unless
they ask for workers: some read the server's process, its /metrics and file descriptors).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu_client import SfuClient

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"aiosfu listening on (http://[^\s:]+:(\d+))")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 300


@dataclass
class SfuServer:
    url: str
    process: subprocess.Popen[bytes] | None = None
    stdout_path: Path | None = None
    stderr_path: Path | None = None
    exit_code: int | None = None  # set once stopped

    def stop(self) -> int:
        """SIGTERM, then the exit code (fails the test unless it exits within STOP_TIMEOUT)."""
        if self.exit_code is None:
            self.exit_code = _terminate(self)
        return self.exit_code

    @property
    def ws_url(self) -> str:
        return self.url.rstrip("/") + "/ws"

    def logs(self, tail: int = LOG_TAIL_LINES) -> str:
        parts = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            if path is None or not path.exists():
                continue
            lines = path.read_text(errors="replace").splitlines()
            cut = f" (last {tail} of {len(lines)} lines)" if len(lines) > tail else ""
            parts.append(f"--- server {label}{cut} ---\n" + "\n".join(lines[-tail:]))
        return "\n".join(parts)


def _start_server(
    workdir: Path,
    module: str = "signaling.cli",
    extra: tuple[str, ...] = (),
    *,
    workers: str | None = "1",
    cpus: set[int] | None = None,
) -> SfuServer:
    """``workers``: its --workers (one process, as the suite shares 2 cores; a ``--workers`` in
    ``extra`` comes later and wins); None: the default, one per core of ``cpus`` (its CPU
    affinity; None: this process's)."""
    stdout_path, stderr_path = workdir / "server.stdout", workdir / "server.stderr"
    command = [
        sys.executable,
        "-m",
        module,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--ice-host",
        "127.0.0.1",
        "--log-format",
        "json",
        *(() if workers is None else ("--workers", workers)),
        *extra,
    ]
    if cpus is not None:
        command = ["taskset", "--cpu-list", ",".join(map(str, sorted(cpus))), *command]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if workers is None:
        env.pop("SFU_WORKERS", None)  # the default, whatever the shell says
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err)
    server = SfuServer("", process, stdout_path, stderr_path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        match = LISTENING.search(stdout_path.read_text(errors="replace"))
        if match:
            server.url = match.group(1)
            return server
        if process.poll() is not None:
            pytest.fail(
                f"server exited with {process.returncode} before listening\n{server.logs()}",
                pytrace=False,
            )
        time.sleep(0.05)
    process.kill()
    process.wait()
    pytest.fail(f"server did not print its address within {START_TIMEOUT} s\n{server.logs()}")


def _stop_server(server: SfuServer) -> None:
    assert server.process is not None
    if server.exit_code is None and server.process.poll() is not None:
        pytest.fail(
            f"server died during the test (exit {server.process.returncode})\n{server.logs()}",
            pytrace=False,
        )
    code = server.stop()
    if code != 0:
        pytest.fail(f"server exited with {code} after SIGTERM\n{server.logs()}", pytrace=False)


def _terminate(server: SfuServer) -> int:
    process = server.process
    assert process is not None
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(
            f"server did not exit within {STOP_TIMEOUT} s of SIGTERM\n{server.logs()}",
            pytrace=False,
        )
    return code


@pytest.fixture
def server_module() -> str:
    """The module run as ``python -m MODULE serve ...``; a test module may override it."""
    return "signaling.cli"


@pytest.fixture
def server_args() -> tuple[str, ...]:
    """More ``serve`` options (e.g. ``--udp-port 0``); a test module may override it."""
    return ()


@pytest.fixture
def sfu_server(
    request: pytest.FixtureRequest, tmp_path: Path, server_module: str, server_args: tuple[str, ...]
) -> Iterator[SfuServer]:
    external = os.environ.get("AIOSFU_E2E_URL")
    if external and server_module == "signaling.cli" and not server_args:
        yield SfuServer(external)
        return
    server = _start_server(tmp_path, server_module, server_args)
    request.node.sfu_server = server  # read by pytest_runtest_makereport below
    try:
        yield server
    finally:
        _stop_server(server)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    server = getattr(item, "sfu_server", None)
    if report.when == "call" and report.failed and isinstance(server, SfuServer):
        report.sections.append(("sfu server logs", server.logs()))
    return report


class ClientFactory(Protocol):
    def __call__(
        self,
        room: str,
        name: str,
        *,
        join: bool = True,
        auto_subscribe: bool = True,
        token: str | None = None,
    ) -> Awaitable[SfuClient]: ...


@pytest.fixture
async def make_client(sfu_server: SfuServer) -> AsyncIterator[ClientFactory]:
    """``await make_client(room, name)``: a joined client; all are closed at teardown."""
    set_ice_host_addresses(["127.0.0.1"])
    clients: list[SfuClient] = []

    async def factory(
        room: str,
        name: str,
        *,
        join: bool = True,
        auto_subscribe: bool = True,
        token: str | None = None,
    ) -> SfuClient:
        if join:
            client = await SfuClient.connect(
                sfu_server.ws_url, room, name, auto_subscribe=auto_subscribe, token=token
            )
        else:
            client = await SfuClient.open(sfu_server.ws_url)
        clients.append(client)
        return client

    try:
        yield factory
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        for client in clients:
            for local in client.local_tracks.values():
                local.track.stop()
        set_ice_host_addresses([])
        await _assert_no_client_tasks_left()


async def _assert_no_client_tasks_left() -> None:
    current = asyncio.current_task()
    leftover: list[asyncio.Task[Any]] = []
    for _ in range(20):
        leftover = [
            t
            for t in asyncio.all_tasks()
            if t is not current and not t.done() and t.get_name().startswith("sfu-client")
        ]
        if not leftover:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"client tasks left running after close: {leftover}")


@pytest.fixture
def room() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"
