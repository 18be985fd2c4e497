"""Processes of a benchmark run: the forwarder under test, the load peers, a network namespace.

Every process is started with ``ip netns exec NS`` when the run uses a namespace (that command
execs, so the PID is the process's own) and stopped by its PID in a ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchmarks.janus import write_config

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
LISTENING = re.compile(r"aiosfu listening on http://([^\s:]+):(\d+)")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


# --- /proc ---


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process, all its threads (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live process below it (a server's worker processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def tree_cpu_by_pid(pid: int) -> dict[int, tuple[float, float]]:
    """:func:`cpu_times` of each process in :func:`process_tree`: a server and its workers.
    One that exits while it is read is left out; one that exits between two readings takes its
    time with it (the readings then disagree)."""
    times = {}
    for member in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            times[member] = cpu_times(member)
    return times


def summed_cpu_times(times: Mapping[int, tuple[float, float]]) -> tuple[float, float]:
    """User and system time of :func:`tree_cpu_by_pid`'s processes together."""
    return sum(u for u, _ in times.values()), sum(s for _, s in times.values())


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches, summed over the process's threads."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
    return total


def status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def tree_context_switches(pid: int) -> int:
    """:func:`context_switches` summed over :func:`process_tree` (a server and its workers)."""
    return sum(context_switches(member) for member in process_tree(pid))


def tree_status_field(pid: int, name: str) -> int:
    """A /proc/PID/status number (``Threads``, ``VmRSS`` in kB) summed over
    :func:`process_tree`; a process that exits while it is read counts 0."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += status_field(member, name)
    return total


# --- network ---


@dataclass(frozen=True, slots=True)
class Network:
    """Where the processes run: this namespace on 127.0.0.1, or a namespace of our own."""

    namespace: str | None = None
    ice_host: str = "127.0.0.1"
    nice: int = 0  # scheduling priority of every process (negative: ahead of other work)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run in this network (``ip netns exec`` and ``nice`` exec: same PID)."""
        if self.nice:
            argv = ["nice", "-n", str(self.nice), *argv]
        if self.namespace is None:
            return list(argv)
        return ["ip", "netns", "exec", self.namespace, *argv]


@contextlib.contextmanager
def namespace(name: str) -> Iterator[Network]:
    """A network namespace with lo (127.0.0.1) and a veth ``jn0`` carrying 127.0.0.2.

    Janus skips loopback interfaces when gathering candidates, so it needs jn0; both ends of the
    veth stay inside the namespace, which has no route out. Deleted on exit.
    """

    def run(*argv: str) -> None:
        subprocess.run(["ip", "netns", "exec", name, *argv], check=True, capture_output=True)

    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        run("ip", "link", "set", "lo", "up")
        run("ip", "link", "add", "jn0", "type", "veth", "peer", "name", "jn1")
        run("ip", "addr", "add", "127.0.0.2/32", "dev", "jn0")
        run(
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.jn0.disable_ipv6=1",
            "net.ipv6.conf.jn1.disable_ipv6=1",
        )
        run("ip", "link", "set", "jn0", "up")
        run("ip", "link", "set", "jn1", "up")
        yield Network(name, "127.0.0.2")
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


# --- processes ---


class Process:
    """A child process whose output goes to files in ``workdir``."""

    def __init__(
        self, name: str, argv: Sequence[str], workdir: Path, *, stdin: bool = False
    ) -> None:
        self.name = name
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                list(argv),
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def logs(self, tail: int = 40) -> str:
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {path.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()


class PeerProcess(Process):
    """``python -m benchmarks.peers``: JSON commands on stdin, JSON events on stdout."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path) -> None:
        super().__init__(name, argv, workdir, stdin=True)
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        with self.stdout_path.open("r") as out:
            while self.process.poll() is None or out.tell() < self.stdout_path.stat().st_size:
                line = out.readline()
                if not line:
                    time.sleep(0.02)
                    continue
                with contextlib.suppress(ValueError):
                    self._events.put(json.loads(line))

    def wait_event(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no {kind!r} within {timeout} s\n{self.logs()}")
            try:
                event = self._events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if not self.alive():
                    raise RuntimeError(
                        f"{self.name} exited with {self.process.returncode}\n{self.logs()}"
                    ) from None
                continue
            if event.get("event") == kind:
                return event

    def command(self, **command: Any) -> None:
        stdin: IO[bytes] | None = self.process.stdin
        assert stdin is not None
        stdin.write((json.dumps(command) + "\n").encode())
        stdin.flush()

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(OSError):
                self.command(cmd="stop")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_TIMEOUT)
        super().stop()


def peer_command(network: Network, role: str, server: str, url: str, **options: Any) -> list[str]:
    argv = [sys.executable, "-m", "benchmarks.peers", role, "--server", server, "--url", url]
    argv += ["--ice-host", network.ice_host]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return network.command(argv)


# --- forwarders ---


def start_aiosfu(
    network: Network,
    workdir: Path,
    module: str = "signaling.cli",
    options: Sequence[str] = (),
) -> tuple[Process, str]:
    """``sfu serve`` (uvloop, every feature on unless ``options`` turn one off); returns it and
    its signaling URL."""
    argv = [sys.executable, "-m", module, "serve", "--host", "127.0.0.1", "--port", "0"]
    # one process unless options say --workers N (the last one wins): readings of one pid
    argv += ["--ice-host", network.ice_host, "--log-level", "warning", "--workers", "1", *options]
    server = Process("aiosfu", network.command(argv), workdir)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        match = LISTENING.search(server.stdout_path.read_text(errors="replace"))
        if match:
            return server, f"ws://{match.group(1)}:{match.group(2)}/ws"
        if not server.alive():
            break
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"aiosfu did not start\n{server.logs()}")


def janus_binary() -> str:
    path = shutil.which("janus")
    if path is None:
        raise RuntimeError("janus is not installed: apt-get install -y janus (Debian's 1.1.2)")
    return path


def start_janus(
    network: Network, workdir: Path, configs: Path, event_loops: int | None
) -> tuple[Process, str]:
    """Janus with the testbed's configs; ready once its WebSocket accepts (the peers retry)."""
    if network.namespace is None:
        raise RuntimeError("Janus needs a network namespace (it gathers only on jn0, 127.0.0.2)")
    folder = workdir / f"janus-etc-{event_loops or 'default'}"
    core = write_config(configs, folder, event_loops)
    argv = [janus_binary(), "-C", str(core), "-F", str(folder), "-o"]
    name = f"janus-el{event_loops}" if event_loops else "janus-default"
    server = Process(name, network.command(argv), workdir)
    time.sleep(0.5)
    if not server.alive():
        raise RuntimeError(f"janus exited at once\n{server.logs()}")
    return server, "ws://127.0.0.1:8188"


def janus_version() -> str | None:
    path = shutil.which("janus")
    if path is None:
        return None
    output = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"\(([\d.]+)\)", output)
    return match.group(1) if match else output.strip()[:40]


def udp_drops(pids: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """Datagrams the kernel dropped on each role's UDP sockets (receive buffer full); a role
    may be several processes (a server's workers own its media sockets).

    Read from /proc/PID/net/udp, which lists the sockets of that process's network namespace;
    the last column counts drops per socket, matched to a process by the socket's inode.
    """
    owners: dict[str, str] = {}
    for role, members in pids.items():
        for pid in members:
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        target = os.readlink(fd)
                        if target.startswith("socket:["):
                            owners[target[8:-1]] = role
    drops = dict.fromkeys(pids, 0)
    any_pid = next(pid for members in pids.values() for pid in members)
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{any_pid}/net/udp").read_text().splitlines()[1:]:
            fields = line.split()
            owner = owners.get(fields[9]) if len(fields) > 12 else None
            if owner is not None:
                drops[owner] += int(fields[-1])
    return drops


def udp_counters(pid: int) -> dict[str, int]:
    """The UDP counters (RFC 4113) of ``pid``'s network namespace, from /proc/PID/net/snmp."""
    lines = [line.split() for line in Path(f"/proc/{pid}/net/snmp").read_text().splitlines()]
    names, values = (line[1:] for line in lines if line[0] == "Udp:")
    return {name: int(value) for name, value in zip(names, values, strict=True)}


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent not idle (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / TICKS


def stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM handler of the benchmark commands: unwinds, so every process they started is
    stopped (and a namespace deleted)."""
    raise SystemExit(128 + signum)
