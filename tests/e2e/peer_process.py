"""The processes of a shaped-link call, seen from the test: their JSON-lines protocol and the
handle that starts one and collects what it reports.

Each peer (``shaped_subscriber``, ``shaped_publisher``) prints one JSON object a line on stdout,
each with ``t`` (``time.monotonic()``: one clock for every process on the machine) and ``e``,
its kind, and leaves and exits on a line ``quit`` on stdin (or at its end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


# --- in the peer ---


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"e": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


async def until_quit() -> None:
    """Until a line ``quit`` (or the end) on stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"quit":
            return


async def loop_lag(period: float, ticks: int) -> float:
    """Sleep ``ticks`` x ``period``; the longest a wake-up came late (the loop was busy, or
    the process starved of CPU: a frame gap then is this process's, not the network's)."""
    lag = 0.0
    for _ in range(ticks):
        asleep = time.monotonic()
        await asyncio.sleep(period)
        lag = max(lag, time.monotonic() - asleep - period)
    return lag


async def run_until_quit(*tasks: asyncio.Task[None]) -> None:
    """Until ``quit``; a task that ends first (a track ended, a bug) raises: the process then
    exits with an error and the harness fails the test with its stderr."""
    quit_ = asyncio.create_task(until_quit())
    try:
        await asyncio.wait([quit_, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                task.result()
                raise RuntimeError(f"{task.get_coro()} returned")
    finally:
        for task in (quit_, *tasks):
            task.cancel()
        await asyncio.gather(quit_, *tasks, return_exceptions=True)


# --- in the test ---


@dataclass
class Observed:
    """What one peer process reported, in arrival order."""

    frames: list[tuple[float, int, int]] = field(default_factory=list)  # (t, width, height)
    keyframes: list[tuple[float, int, int]] = field(default_factory=list)  # arrived, not decoded
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    counters: list[dict[str, Any]] = field(default_factory=list)
    #: the publisher's every 0.5 s: {rid: [packets sent, keyframes sent]}, its loop's lag
    sent: list[dict[str, Any]] = field(default_factory=list)
    participant_id: str | None = None
    track_id: str | None = None  # received (subscriber) or published (publisher)
    closed: str | None = None

    def of_type(self, kind: str, since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.messages if m.get("type") == kind and t >= since]

    def add(self, event: dict[str, Any]) -> None:
        kind, at = event.get("e"), float(event.get("t", 0.0))
        if kind == "frame":
            self.frames.append((at, int(event["w"]), int(event["h"])))
        elif kind == "keyframe":
            self.keyframes.append((at, int(event["w"]), int(event["h"])))
        elif kind == "msg":
            self.messages.append((at, dict(event["data"])))
        elif kind == "rx":
            self.counters.append(event)
        elif kind == "tx":
            self.sent.append(event)
        elif kind == "joined":
            self.participant_id = str(event["id"])
        elif kind in ("track", "published"):
            self.track_id = str(event["trackId"])
        elif kind == "closed":
            self.closed = str(event["reason"])


class PeerProcess:
    """A running peer process; :attr:`seen` fills as it reports."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.seen = Observed()
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"peer-{name}")

    @classmethod
    async def start(
        cls, prefix: list[str], module: str, name: str, args: list[str], log_dir: Path
    ) -> PeerProcess:
        """``python -m module --name name *args``; ``prefix`` runs it in its namespace."""
        log = log_dir / f"{name}.stderr"
        module_args = [sys.executable, "-m", module, "--name", name, *args]
        with log.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                *prefix, *module_args, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=err, cwd=REPO,
            )  # fmt: skip
        return cls(name, process, log)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            with contextlib.suppress(ValueError):
                self.seen.add(json.loads(line))
            self._changed.set()
        self._changed.set()

    async def wait_until(
        self,
        predicate: Callable[[Observed], bool],
        timeout: float,  # noqa: ASYNC109
        what: str,
    ) -> None:
        """Until ``predicate(seen)``; raises AssertionError (with its log) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate(self.seen):
            if self.process.returncode is not None or self._reader.done():
                raise AssertionError(f"{self.name} exited waiting {what}\n{self.logs()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {what} within {timeout} s\n{self.logs()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def logs(self, tail: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return f"--- {self.name} stderr ---\n" + "\n".join(lines[-tail:])

    async def stop(self, timeout: float = 10.0) -> int:  # noqa: ASYNC109
        """Ask it to leave (``quit``), kill it after ``timeout``; its exit code."""
        if self.process.returncode is None and self.process.stdin is not None:
            with contextlib.suppress(ConnectionError):
                self.process.stdin.write(b"quit\n")
                await self.process.stdin.drain()
                self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        await self._reader
        return self.process.returncode if self.process.returncode is not None else -1
