"""Idle connections against the real server subprocess: they are closed, and they cannot use up
the file descriptors that /healthz and new joins need (docs/operations.md, file limits).

Timeouts come from the environment (``SFU_HTTP_IDLE_TIMEOUT``, ``SFU_JOIN_TIMEOUT``) as an
operator would set them; the file limit is lowered for the server process alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType

START_TIMEOUT = 30.0
TIMEOUT = 10.0
LISTENING = re.compile(rb"aiosfu listening on http://127\.0\.0\.1:(\d+)")
#: Runs the server with RLIMIT_NOFILE set from argv (soft, hard) first.
LIMITED = (
    "import resource, runpy, sys\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv.pop(1)), int(sys.argv.pop(1))))\n"
    "runpy.run_module('signaling.cli', run_name='__main__')\n"
)
#: Descriptors the test lets the server have: it uses 14 when listening. Idle connections open
#: more than this many.
LOW_LIMIT = 48
IDLE_CONNECTIONS = 100


@dataclass
class Server:
    port: int
    stderr: Path

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.stderr.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events


@contextlib.asynccontextmanager
async def running_server(
    tmp_path: Path, env: dict[str, str], nofile: tuple[int, int] | None = None
) -> AsyncIterator[Server]:
    prelude = ["-m", "signaling.cli"] if nofile is None else ["-c", LIMITED, *map(str, nofile)]
    stderr_path = tmp_path / "server.stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *prelude,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--ice-host",
            "127.0.0.1",
            "--workers",  # one process: the file descriptors counted are its own
            "1",
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "SFU_LOG_FORMAT": "json", **env},
        )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        match = LISTENING.match(line)
        assert match, (line, stderr_path.read_text(errors="replace")[-3000:])
        yield Server(int(match.group(1)), stderr_path)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (fails after TIMEOUT)."""
    return await asyncio.wait_for(reader.read(), TIMEOUT)


async def healthz(port: int) -> bool:
    """One GET /healthz on a new connection: did it get 200?"""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: sfu\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), TIMEOUT)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
    return response.startswith(b"HTTP/1.1 200")


async def wait_for_healthz(port: int, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if await healthz(port):
                return
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def idle_connections(port: int, count: int) -> AsyncIterator[list[asyncio.StreamWriter]]:
    """``count`` TCP connections that send nothing (some may be refused: that is the point)."""
    writers = []
    for _ in range(count):
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        writers.append(writer)
    try:
        yield writers
    finally:
        for writer in writers:
            writer.close()


async def test_idle_http_connections_are_closed(tmp_path: Path) -> None:
    async with running_server(tmp_path, {"SFU_HTTP_IDLE_TIMEOUT": "0.5"}) as server:
        # never sends a byte
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", server.port)
        # sends a request line and a header, never the end of the headers
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", server.port)
        slow.write(b"GET /healthz HTTP/1.1\r\nHost: sfu\r\n")
        # gets its response, then keeps the connection without a second request
        kept_reader, kept = await asyncio.open_connection("127.0.0.1", server.port)
        kept.write(b"GET /healthz HTTP/1.1\r\nHost: sfu\r\n\r\n")
        assert await closed_by_server(silent_reader) == b""
        assert await closed_by_server(slow_reader) == b""
        assert (await closed_by_server(kept_reader)).startswith(b"HTTP/1.1 200")
        for writer in (silent, slow, kept):
            writer.close()


async def test_unjoined_websocket_is_closed_by_the_server(tmp_path: Path) -> None:
    async with running_server(tmp_path, {"SFU_JOIN_TIMEOUT": "0.5"}) as server:
        url = f"http://127.0.0.1:{server.port}/ws"
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            # one bound for both: receive()'s own timeout restarts at each of the server's pings
            async with asyncio.timeout(TIMEOUT):
                msg = await ws.receive()
                assert msg.type is WSMsgType.TEXT, msg
                assert json.loads(msg.data) == {"type": "bye", "reason": "join-timeout"}
                msg = await ws.receive()
            assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1008, "join-timeout")
        closing = [e for e in server.log_events() if e.get("event") == "closing: no join in time"]
        assert closing and closing[0]["join_timeout"] == 0.5


async def test_soft_file_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = min(hard, 4096)
    assert hard > LOW_LIMIT + IDLE_CONNECTIONS + 50, "the test needs a higher hard limit"
    # the idle timeout is longer than the test waits: only the raised limit can make room
    env = {"SFU_HTTP_IDLE_TIMEOUT": "60"}
    async with running_server(tmp_path, env, nofile=(LOW_LIMIT, hard)) as server:
        async with idle_connections(server.port, IDLE_CONNECTIONS):
            await wait_for_healthz(server.port, TIMEOUT)
        limits = [e for e in server.log_events() if e.get("event") == "file descriptor limit"]
        assert len(limits) == 1
        assert (limits[0]["soft"], limits[0]["hard"], limits[0]["started_with"]) == (
            hard,
            hard,
            LOW_LIMIT,
        )


async def test_idle_connections_beyond_the_limit_do_not_block_healthz(tmp_path: Path) -> None:
    # the hard limit is as low as the soft one, so only closing idle connections frees room
    env = {"SFU_HTTP_IDLE_TIMEOUT": "3"}
    async with running_server(tmp_path, env, nofile=(LOW_LIMIT, LOW_LIMIT)) as server:
        async with idle_connections(server.port, IDLE_CONNECTIONS):
            await wait_for_healthz(server.port, TIMEOUT + 3)
        events = [e["event"] for e in server.log_events()]
        # the server said so while it was out of descriptors (it checks every 2 s)
        assert "file descriptors nearly exhausted: new connections will be refused" in events
        assert any(event.startswith("file descriptor limit is low") for event in events)
