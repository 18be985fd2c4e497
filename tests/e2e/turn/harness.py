"""A real coturn, the real server and peer processes in two network namespaces (tests/e2e/turn).

::

    namespace <tag>-sfu                                namespace <tag>-sub
    lo 127.0.0.1  the server's media sockets, the      lo 127.0.0.1
                  publisher, coturn's relay sockets
    bwe0 10.99.0.1/30  coturn's listener, the  <--veth-->  bwe1 10.99.0.2/30  the subscriber
                       server's HTTP (0.0.0.0)

The server gathers ICE candidates on 127.0.0.1 only: from the subscriber's namespace its UDP
ports cannot be reached (127.0.0.1 there is the subscriber's own lo), only its signaling and
coturn's listener on 10.99.0.1. Media can then flow only through a relay that coturn allocates
on 127.0.0.1 for the subscriber, with the credentials of ``joined``. Made with
tests/e2e/shaped_link.py's :class:`ShapedLink` (never shaped here); needs root and Debian's
``coturn``. Every process is stopped by its PID and the namespaces deleted, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.e2e.shaped_link import (
    LISTENING,
    SERVER_ADDRESS,
    SUBSCRIBER_ADDRESS,
    LinkUnavailable,
    ShapedLink,
    check_available,
    in_namespace,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
TURNSERVER = Path(os.environ.get("AIOSFU_TURNSERVER", "/usr/bin/turnserver"))
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
STUN_MAGIC = 0x2112A442


def check_turn_available() -> None:
    """LinkUnavailable with the reason when these tests cannot run here."""
    check_available()
    if not os.access(TURNSERVER, os.X_OK):
        raise LinkUnavailable(f"{TURNSERVER} is missing (Debian package coturn; see "
                              "scripts/install-system-deps)")  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _free_udp_port(namespace: str, address: str) -> int:
    with in_namespace(namespace), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def _stun_answers(namespace: str, address: str, port: int) -> bool:
    """Whether a STUN Binding request (RFC 8489 §6) to ``address:port`` gets a response."""
    transaction = secrets.token_bytes(12)
    request = struct.pack("!HHI", 0x0001, 0, STUN_MAGIC) + transaction
    with in_namespace(namespace), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        probe.sendto(request, (address, port))
        try:
            response = probe.recv(2048)
        except OSError:
            return False
    return response[8:20] == transaction


class Turnserver:
    """coturn in the server's namespace, listening on :data:`SERVER_ADDRESS`."""

    def __init__(self, link: ShapedLink, workdir: Path, secret: str) -> None:
        self.port = _free_udp_port(link.server_ns, SERVER_ADDRESS)
        self.url = f"turn:{SERVER_ADDRESS}:{self.port}?transport=udp"
        state = workdir / "coturn"
        state.mkdir()
        self.log_path = state / "turn.log"
        config = (HERE / "turnserver.conf").read_text()
        for key, value in (
            ("@STATE_DIR@", str(state)),
            ("@LISTENING_IP@", SERVER_ADDRESS),
            ("@PORT@", str(self.port)),
            ("@SECRET@", secret),
        ):
            config = config.replace(key, value)
        config_path = state / "turnserver.conf"
        config_path.write_text(config)
        with (state / "stderr").open("wb") as err:
            self.process = subprocess.Popen(
                link.command(link.server_ns, str(TURNSERVER), "-c", str(config_path)),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not _stun_answers(link.server_ns, SERVER_ADDRESS, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                _stop(self.process)
                raise RuntimeError(f"coturn did not answer on {self.url}\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        return _stop(self.process)


class Server:
    """The real server in the server's namespace: HTTP on 0.0.0.0, media on 127.0.0.1 only."""

    def __init__(self, link: ShapedLink, workdir: Path, env: dict[str, str], *extra: str) -> None:
        workdir.mkdir()
        self.stdout_path, self.stderr_path = workdir / "stdout", workdir / "stderr"
        command = link.command(
            link.server_ns, sys.executable, "-m", "signaling.cli", "serve", "--insecure",
            "--host", "0.0.0.0", "--port", "0", "--ice-host", "127.0.0.1",
            "--log-format", "json", "--connect-timeout", "6", "--workers", "1", *extra,
        )  # fmt: skip
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=full_env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        deadline = time.monotonic() + START_TIMEOUT
        while (match := LISTENING.search(self.stdout_path.read_text(errors="replace"))) is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                _stop(self.process)
                raise RuntimeError(f"the server did not start\n{self.logs()}")
            time.sleep(0.05)
        self.port = int(match.group(1))

    def url(self, host: str) -> str:
        return f"http://{host}:{self.port}"

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in (self.stdout_path, self.stderr_path)
            if path.exists()
        )

    def stop(self) -> int:
        return _stop(self.process)


class Publisher:
    """``peer publish`` in the server's namespace, on 127.0.0.1."""

    def __init__(self, link: ShapedLink, server: Server, room: str, workdir: Path) -> None:
        self.stderr_path = workdir / f"publisher-{room}.stderr"
        command = link.command(
            link.server_ns, sys.executable, "-m", "tests.e2e.turn.peer", "publish",
            server.url("127.0.0.1"), room,
        )  # fmt: skip
        with self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # bounded by the client's own request timeouts
        if not line:
            _stop(self.process)
            raise RuntimeError(f"the publisher failed:\n{self.stderr_path.read_text()}")
        self.published: dict[str, Any] = json.loads(line)

    def stop(self) -> int:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(b"quit\n")
            self.process.stdin.close()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return _stop(self.process)
        return self.process.returncode


def subscribe(
    link: ShapedLink, server: Server, room: str, *, behind_turn: bool, within: float
) -> dict[str, Any]:
    """``peer subscribe``: in the subscriber's namespace (reaching the server's HTTP and coturn
    on 10.99.0.1) if ``behind_turn``, else next to the server on 127.0.0.1. Its report."""
    namespace, host, ice_host = (
        (link.subscriber_ns, SERVER_ADDRESS, SUBSCRIBER_ADDRESS)
        if behind_turn
        else (link.server_ns, "127.0.0.1", "127.0.0.1")
    )
    command = link.command(
        namespace, sys.executable, "-m", "tests.e2e.turn.peer", "subscribe", server.url(host),
        room, "--ice-host", ice_host, "--within", str(within),
    )  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, timeout=within + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the subscriber failed ({done.returncode}):\n{done.stderr.decode()}")
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


@contextlib.contextmanager
def turn_testbed(workdir: Path, secret: str) -> Iterator[tuple[ShapedLink, Turnserver]]:
    """The namespaces and coturn (with ``secret``), removed at the end."""
    check_turn_available()
    with ShapedLink(f"aiosfuturn{os.getpid()}") as link:
        turn = Turnserver(link, workdir, secret)
        try:
            yield link, turn
        finally:
            turn.stop()


@contextlib.contextmanager
def call(
    link: ShapedLink, workdir: Path, room: str, env: dict[str, str], *extra: str
) -> Iterator[Server]:
    """A server started with ``extra`` options and ``env``, and a publisher in ``room``."""
    server = Server(link, workdir / f"server-{room}", env, *extra)
    try:
        publisher = Publisher(link, server, room, workdir)
        try:
            yield server
        finally:
            publisher.stop()
    finally:
        server.stop()
