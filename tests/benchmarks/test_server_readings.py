"""The forwarding benchmark reads a server with workers as one: every /proc reading over the
process tree, the forwarding-latency histogram summed over the ``worker`` label."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from benchmarks import metrics
from benchmarks.processes import (
    context_switches,
    process_tree,
    status_field,
    tree_context_switches,
    tree_status_field,
    udp_drops,
)

# a parent that starts a child holding a small UDP socket it never reads, and prints its port
_PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
print(child.stdout.readline().strip(), child.pid, flush=True)
child.wait()
"""
_CHILD = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
time.sleep(60)
"""


@pytest.fixture
def parent_and_child() -> Iterator[tuple[int, int, int]]:
    """(parent pid, child pid, the child's UDP port)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, _CHILD], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        port, child = (int(x) for x in parent.stdout.readline().split())
        yield parent.pid, child, port
    finally:
        for pid in process_tree(parent.pid)[::-1]:  # the child first
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        parent.wait()


def test_a_child_s_socket_drops_count_for_its_parent_s_role(
    parent_and_child: tuple[int, int, int],
) -> None:
    parent, child, port = parent_and_child
    assert process_tree(parent) == [parent, child]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(200):
            sender.sendto(b"x" * 1000, ("127.0.0.1", port))
    time.sleep(0.1)
    assert udp_drops({"server": [parent]})["server"] == 0  # the parent holds no socket
    assert udp_drops({"server": process_tree(parent)})["server"] > 0


def test_threads_rss_and_switches_are_summed_over_the_tree(
    parent_and_child: tuple[int, int, int],
) -> None:
    parent, child, _ = parent_and_child
    assert tree_status_field(parent, "Threads") == 2  # one thread each
    rss = tree_status_field(parent, "VmRSS")
    assert rss >= status_field(parent, "VmRSS") + status_field(child, "VmRSS") - 64  # kB
    assert tree_context_switches(parent) >= context_switches(parent) + context_switches(child)


def test_forwarding_histogram_adds_the_workers_buckets() -> None:
    text = "\n".join(
        f'sfu_forwarding_latency_seconds_bucket{{le="{le}",worker="{w}"}} {count}'
        for w, counts in (("0", (1, 3, 3)), ("1", (0, 2, 5)))
        for le, count in zip(("0.0001", "0.001", "+Inf"), counts, strict=True)
    )
    found = metrics.forwarding_histogram(text)
    assert found is not None
    name, buckets = found
    assert name == "sfu_forwarding_latency_seconds"
    assert buckets == {0.0001: 1.0, 0.001: 5.0, float("inf"): 8.0}
