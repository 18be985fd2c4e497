"""Node failover (``python -m benchmarks.failover --kill node``): how long a call goes without
video when the node holding its room dies.

A cluster in network namespaces (tests/cluster/netns.py: one real Redis in the hub, ``--nodes``
``sfu serve --redis`` nodes each in a namespace of its own with its own address, no route out).
Each trial is a call in a room of its own: a client process in the clients' namespace
(:mod:`benchmarks.failover_call`) whose participant *i* enters through node *i* mod N and has
every node's URL. Once each decoded a frame of every other, the node hosting the room (from
the nodes' ``/healthz``) gets SIGKILL at t0. Participants that entered through another node
are told ``bye reconnect`` when its link to the dead one breaks; those of the dead node lose
their WebSocket and join through their next URL; the room is taken over once the dead node's
Redis key expired (docs/design/scale-out-plan.md §4 "Node loss"). Measured per client as in
the worker mode: t0 to its first frame decoded on a video track offered after t0. The killed
node is started again (a new node id) before the next trial.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.failover import POLL, SETTLE_TIMEOUT, meta, summarize
from benchmarks.processes import PeerProcess
from tests.cluster.netns import ClusterNetwork, Node, cluster, get_json, start_node

T = TypeVar("T")


def health(net: ClusterNetwork, node: Node) -> dict[str, Any] | None:
    """The node's /healthz, read from the clients' namespace (None: it does not answer)."""
    # get_json enters the namespace on the calling thread: a thread of its own, never ours
    with ThreadPoolExecutor(1) as pool, contextlib.suppress(OSError):
        return pool.submit(get_json, net.clients, node.http_url + "/healthz").result()
    return None


def until(check: Callable[[], T | None], what: str, timeout: float = SETTLE_TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        time.sleep(POLL)
    return found


def settled(net: ClusterNetwork, nodes: list[Node]) -> bool:
    """Every node up, registered (Redis up) and without a room: as at the start."""
    reports = [health(net, n) for n in nodes]
    return all(
        r is not None and r["status"] == "ok" and r["redis"] == "up" and r["rooms"] == 0
        for r in reports
    )


def room_node(net: ClusterNetwork, nodes: list[Node]) -> Node | None:
    """The node hosting the trial's room, once exactly one counts it."""
    hosting = [n for n in nodes if (r := health(net, n)) is not None and r["rooms"] == 1]
    return hosting[0] if len(hosting) == 1 else None


def trial(
    net: ClusterNetwork, nodes: list[Node], index: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """One call, its node killed; per client the seconds to its next frame (None: none)."""
    until(lambda: settled(net, nodes), "cluster with every node up and no room")
    argv = [sys.executable, "-m", "benchmarks.failover_call", "--room", f"failover-{index}",
            "--clients", str(args.clients), "--ice-host", net.addresses[net.clients],
            "--timeout", str(args.timeout)]  # fmt: skip
    for node in nodes:
        argv += ["--url", node.ws_url]
    call = PeerProcess(f"call-{index}", net.network(net.clients).command(argv), workdir)
    try:
        ready = call.wait_event("ready", SETTLE_TIMEOUT)
        owner = until(lambda: room_node(net, nodes), "room on one node")
        t0 = time.monotonic()
        os.kill(owner.process.pid, signal.SIGKILL)
        call.command(cmd="killed", t0=t0)
        owner.process.process.wait()
        result = call.wait_event("result", args.timeout + SETTLE_TIMEOUT)
    finally:
        call.stop()
    return {
        "trial": index,
        "node": owner.namespace,
        "pid": owner.process.pid,
        "url": owner.ws_url,
        "seconds": result["seconds"],
        # per client: whether it entered through the killed node (it then lost its WebSocket)
        "through_killed": [url == owner.ws_url for url in ready["urls"]],
        "urls_after": result["urls"],
        "rejoins": result["rejoins"],
        "errors": result["errors"],
    }


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    started = datetime.now(UTC)
    trials = []
    with cluster(workdir, nodes=args.nodes) as (net, nodes), contextlib.ExitStack() as restarted:
        for index in range(args.trials):
            result = trial(net, nodes, index, args, workdir)
            shown = ", ".join("-" if s is None else f"{s:.2f}" for s in result["seconds"])
            print(f"  trial {index + 1}: node {result['node']} (pid {result['pid']}) killed; "
                  f"next frame after {shown} s", flush=True)  # fmt: skip
            trials.append(result)
            if index + 1 < args.trials:  # the killed node again, a new node id
                k = next(k for k, n in enumerate(nodes) if n.namespace == result["node"])
                node = start_node(net, nodes[k].namespace, workdir / f"n{k + 1}-{index + 1}",
                                  workdir / "cluster-secret")  # fmt: skip
                restarted.callback(node.process.stop)
                nodes[k] = node
    return {
        "meta": meta(args, started, nodes=args.nodes),
        "trials": trials,
        "summary": summarize(trials),
    }
