"""A cluster in network namespaces (issue 13, S17): one real Redis, ``sfu serve --redis`` nodes
and the client processes, each in a namespace of its own, all on one bridge::

    namespace <tag>-hub   br0 10.99.0.1/24       redis-server on 10.99.0.1:6379
      | veth n1 (hub) -- eth0 in <tag>-n1       10.99.0.2    node 1 (HTTP, node link, media)
      | veth n2 (hub) -- eth0 in <tag>-n2       10.99.0.3    node 2
      | veth cl (hub) -- eth0 in <tag>-cl       10.99.0.100  the client processes

Unlike the loopback cluster (tests/cluster/conftest.py), every node has an interface, an
address and a kernel of its own: a killed node's sockets go away with it and nothing else on
its address answers, as on a real machine. No namespace has a route out, so 10.99.0.0/24
exists only here (the network rule); ``tag`` is unique per run, so parallel or leftover runs
do not collide. A test process cannot move its event loop into a namespace for part of its
work: the clients run as processes (:mod:`tests.e2e.room_peers`), and the test reads a node's
``/healthz`` from a thread that enters the clients' namespace (:func:`get_json`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.processes import Network, Process, start_aiosfu
from tests.e2e.shaped_link import LinkUnavailable, check_available, in_namespace

SUBNET = "10.99.0"
PREFIX = 24
HUB_ADDRESS = f"{SUBNET}.1"
CLIENTS_ADDRESS = f"{SUBNET}.100"
REDIS_PORT = 6379  # the hub's own namespace: no other Redis can hold it
BRIDGE = "br0"
START_TIMEOUT = 10.0
HTTP_TIMEOUT = 5.0


def require_namespaces() -> None:
    """Skip a test here when network namespaces cannot be made (not root); on CI fail instead:
    they must run there."""
    import pytest  # only the tests call this: benchmarks import the module without pytest

    try:
        check_available()
    except LinkUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"network namespaces cannot be made on CI: {exc}", pytrace=False)
        pytest.skip(str(exc))


def _ip(*argv: str) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)} failed ({done.returncode}): {done.stderr}")


def namespaces() -> set[str]:
    """The names ``ip netns list`` shows (this machine's, not only ours)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def namespace_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


class ClusterNetwork:
    """The hub with ``br0``, ``nodes`` node namespaces and the clients' namespace; :meth:`close`
    (or leaving the ``with``) ends what still runs in them and deletes them all."""

    def __init__(self, nodes: int, tag: str | None = None) -> None:
        check_available()
        if not 1 <= nodes <= 9:
            raise ValueError(f"1 to 9 nodes, not {nodes}")
        tag = tag or f"sfu-{os.getpid()}-{secrets.token_hex(2)}"
        self.hub = f"{tag}-hub"
        self.nodes = [f"{tag}-n{k}" for k in range(1, nodes + 1)]
        self.clients = f"{tag}-cl"
        #: namespace -> its address on the bridge
        self.addresses = {ns: f"{SUBNET}.{k + 2}" for k, ns in enumerate(self.nodes)}
        self.addresses[self.clients] = CLIENTS_ADDRESS
        self.made: list[str] = []
        #: processes :meth:`close` found still running in the namespaces and killed
        self.killed: list[int] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    @property
    def names(self) -> list[str]:
        return [self.hub, *self.nodes, self.clients]

    def _build(self) -> None:
        for ns in self.names:
            _ip("netns", "add", ns)
            self.made.append(ns)
            # no IPv6: no router solicitations, DAD or link-local addresses on the bridge
            _ip("netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1")  # fmt: skip
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", self.hub, "addr", "add", f"{HUB_ADDRESS}/{PREFIX}", "dev", BRIDGE)
        _ip("-n", self.hub, "link", "set", BRIDGE, "up")
        for ns, address in self.addresses.items():
            port = ns.rsplit("-", 1)[1]  # n1, n2, cl: the hub's end of this namespace's veth
            _ip("-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns)  # fmt: skip
            _ip("-n", self.hub, "link", "set", port, "master", BRIDGE, "up")
            _ip("-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def network(self, ns: str) -> Network:
        """Where a process in ``ns`` runs (``benchmarks.processes``): its command prefix and
        the one address it gathers ICE candidates on."""
        return Network(ns, self.addresses.get(ns, HUB_ADDRESS))

    def close(self) -> None:
        """SIGKILL whatever still runs in the namespaces (a namespace outlives its deletion while
        a process holds it), then delete them; the veths and the bridge go with them."""
        for ns in self.made:
            for pid in set(namespace_pids(ns)) - {os.getpid()}:  # the test's, never
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self.made.clear()

    def __enter__(self) -> ClusterNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- what runs in it ---


@dataclass(frozen=True, slots=True)
class Node:
    """An ``sfu serve --redis`` process in its namespace."""

    namespace: str
    process: Process
    ws_url: str  # ws://10.99.0.N:PORT/ws

    @property
    def http_url(self) -> str:
        return self.ws_url.replace("ws://", "http://", 1).removesuffix("/ws")


def start_redis(hub: Network, workdir: Path) -> Process:
    """redis-server on the hub's address (``hub``: ``net.network(net.hub)``), no persistence;
    ready when it says so. Not in protected mode, which refuses every client not on loopback:
    only the test's namespaces reach 10.99.0.1."""
    argv = ["redis-server", "--bind", HUB_ADDRESS, "--port", str(REDIS_PORT), "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--dir", str(workdir)]  # fmt: skip
    redis = Process("redis", hub.command(argv), workdir)
    deadline = time.monotonic() + START_TIMEOUT
    while "Ready to accept connections" not in redis.stdout_path.read_text(errors="replace"):
        if not redis.alive() or time.monotonic() > deadline:
            redis.stop()
            raise RuntimeError(f"redis-server did not start\n{redis.logs()}")
        time.sleep(0.05)
    return redis


def redis_url() -> str:
    return f"redis://{HUB_ADDRESS}:{REDIS_PORT}/0"


def start_node(net: ClusterNetwork, ns: str, workdir: Path, secret: Path) -> Node:
    """``sfu serve`` in ``ns`` on its address: HTTP, node link and media (no access keys: only
    the test's namespaces reach it)."""
    address = net.addresses[ns]
    options = ["--host", address, "--insecure", "--redis", redis_url(), "--node-address",
               f"{address}:0", "--cluster-secret-file", str(secret), "--log-level", "info",
               "--log-format", "json"]  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    process, ws_url = start_aiosfu(net.network(ns), workdir, options=options)
    return Node(ns, process, ws_url)


@contextlib.contextmanager
def cluster(workdir: Path, nodes: int = 2) -> Iterator[tuple[ClusterNetwork, list[Node]]]:
    """The namespaces, Redis in the hub and ``nodes`` nodes sharing one cluster secret;
    everything stopped and deleted on exit, whatever happened."""
    secret = workdir / "cluster-secret"
    secret.write_text(secrets.token_hex(16) + "\n")
    with ClusterNetwork(nodes) as net, contextlib.ExitStack() as running:
        redis = start_redis(net.network(net.hub), workdir)
        running.callback(redis.stop)
        started: list[Node] = []
        for k, ns in enumerate(net.nodes, 1):
            node = start_node(net, ns, workdir / f"node{k}", secret)
            running.callback(node.process.stop)
            started.append(node)
        yield net, started


def get_json(ns: str, url: str) -> dict[str, Any]:
    """GET ``url`` from namespace ``ns`` (blocking: call it in a thread, as
    ``asyncio.to_thread`` does; the thread enters ``ns`` for the request only)."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    with in_namespace(ns), direct.open(url, timeout=HTTP_TIMEOUT) as response:
        body: dict[str, Any] = json.load(response)
        return body
