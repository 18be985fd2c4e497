"""An impaired link between two network namespaces: the veths, the middle namespace and the
bridge process of ``benchmarks/impair.py`` in it (see that module for the picture).

:class:`ImpairedLink` is what tests use::

    with ImpairedLink("t-sfu", "t-sub", forward=parse_impairment("loss=5%")) as link:
        subprocess.run(link.command(link.right_ns, "ping", "-c3", link.left_address))
        link.counters()["forward"].lost

The addresses live only in namespaces it made or was given, with no route out (the testbed's
network rule); :meth:`ImpairedLink.close` deletes the middle namespace (the veths go with it)
and the end namespaces it made. Needs root (``ip netns``, AF_PACKET).

Transmit checksum offload is turned off on both ends (``SIOCETHTOOL``; this machine has no
``ethtool`` command): a veth hands its peer a frame whose UDP/TCP checksum is still to be filled
in, which the receiving stack trusts, but the bridge copies the bytes into a new frame, and the
far end would then drop it for a bad checksum. Without checksum offload the kernel also stops
handing veths TCP segments larger than the MTU.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.impair import Counters, Impairment, read_counters, save_config

REPO = Path(__file__).resolve().parents[1]
LEFT_IF, RIGHT_IF = "imp0", "imp1"  # the ends, in LEFT and RIGHT
MIDDLE_IFS = ("impl", "impr")  # their peers, in the middle namespace, bridged
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
#: The bridge's scheduling priority: ahead of the processes it carries, so that the shared
#: machine's load adds as little delay as possible to the one the bridge is told to add.
NICE = -10
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


def _exists(namespace: str) -> bool:
    return Path("/run/netns", namespace).exists()


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns to {what}: {os.strerror(errno)}")


@contextlib.contextmanager
def _in_namespace(namespace: str) -> Iterator[None]:
    """This thread in ``namespace`` for the body (sockets made meanwhile stay in it)."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        _setns(target, namespace)
        try:
            yield
        finally:
            _setns(original, "the original namespace")
    finally:
        os.close(target)
        os.close(original)


def _end_with_parent() -> None:
    """In the bridge, before exec: SIGTERM when the process that made the link dies, killed
    or not (the namespaces stay behind then, but nothing runs in them)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def transmit_checksum_off(namespace: str, interface: str) -> None:
    """``ethtool -K interface tx off`` in ``namespace`` (the ioctl behind it)."""
    with _in_namespace(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0), 8)
        request = struct.pack("16sP", interface.encode(), ctypes.addressof(value))
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request.ljust(40, b"\0"))


class ImpairedLink:
    """LEFT and RIGHT joined through the bridge; ``forward`` impairs LEFT to RIGHT."""

    def __init__(
        self,
        left_ns: str,
        right_ns: str,
        forward: Impairment | None = None,
        backward: Impairment | None = None,
        *,
        addresses: tuple[str, str] = ("10.99.0.1/30", "10.99.0.2/30"),
        seed: int = 1,
        stats: Path | None = None,
    ) -> None:
        if os.geteuid() != 0:
            raise PermissionError("an impaired link needs root (ip netns, AF_PACKET)")
        self.left_ns, self.right_ns = left_ns, right_ns
        self.middle_ns = f"{right_ns}-imp"
        self.left_address, self.right_address = (a.partition("/")[0] for a in addresses)
        self._workdir = Path(tempfile.mkdtemp(prefix="impair-"))
        self.stats_path = stats or self._workdir / "stats.json"
        self._config = self._workdir / "config.json"
        self._made: list[str] = []
        self._bridge: subprocess.Popen[bytes] | None = None
        #: the counters the bridge wrote last before it stopped (set by :meth:`close`)
        self.final: dict[str, Counters] | None = None
        try:
            self._build(addresses)
            save_config(self._config, forward or Impairment(), backward or Impairment())
            self._start(seed)
        except BaseException:
            self.close()
            raise

    def _build(self, addresses: tuple[str, str]) -> None:
        for ns in (self.left_ns, self.right_ns, self.middle_ns):
            if ns == self.middle_ns or not _exists(ns):  # the middle one is always ours
                _run("ip", "netns", "add", ns)
                self._made.append(ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
        middle = self.middle_ns
        # the middle namespace has no address and no IPv6: it never sends anything itself
        for key in ("all", "default"):
            _run("ip", "netns", "exec", middle, "sysctl", "-q", "-w",
                 f"net.ipv6.conf.{key}.disable_ipv6=1")  # fmt: skip
        ends = ((self.left_ns, LEFT_IF, addresses[0]), (self.right_ns, RIGHT_IF, addresses[1]))
        for (ns, interface, address), inner in zip(ends, MIDDLE_IFS, strict=True):
            _run("ip", "-n", middle, "link", "add", inner, "type", "veth",
                 "peer", "name", interface, "netns", ns)  # fmt: skip
            _run("ip", "-n", middle, "link", "set", inner, "promisc", "on", "up")
            _run("ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                 f"net.ipv6.conf.{interface}.disable_ipv6=1")  # fmt: skip
            transmit_checksum_off(ns, interface)
            _run("ip", "-n", ns, "addr", "add", address, "dev", interface)
            _run("ip", "-n", ns, "link", "set", interface, "up")

    def _start(self, seed: int) -> None:
        command = [
            "ip", "netns", "exec", self.middle_ns, "nice", "-n", str(NICE),
            sys.executable, "-m", "benchmarks.impair", "bridge", *MIDDLE_IFS,
            "--config", str(self._config), "--stats", str(self.stats_path), "--seed", str(seed),
        ]  # fmt: skip
        stderr = (self._workdir / "bridge.stderr").open("wb")
        with stderr:
            self._bridge = subprocess.Popen(
                command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
                preexec_fn=_end_with_parent,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not self.stats_path.exists():
            if self._bridge.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bridge did not start:\n{self.logs()}")
            time.sleep(0.02)

    def command(self, namespace: str, *argv: str) -> list[str]:
        """``argv`` run inside ``namespace`` (``ip netns exec`` execs: the PID is argv's)."""
        return ["ip", "netns", "exec", namespace, *argv]

    def set(self, forward: Impairment, backward: Impairment) -> None:
        """Change the impairments now (frames already held keep their departure times)."""
        save_config(self._config, forward, backward)
        if self._bridge is not None:
            self._bridge.send_signal(signal.SIGHUP)

    def counters(self) -> dict[str, Counters]:
        """Each direction's counters, as the bridge wrote them at most 0.2 s ago."""
        return read_counters(json.loads(self.stats_path.read_text()))

    def logs(self) -> str:
        path = self._workdir / "bridge.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Stop the bridge (its last counters: :attr:`final`), delete what was made."""
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            bridge.terminate()
            try:
                bridge.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                bridge.kill()
                bridge.wait()
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.final = self.counters()
        for ns in self._made:  # the veths go with the middle namespace
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        self._made.clear()
        if self._workdir.exists():
            for path in self._workdir.iterdir():
                if path != self.stats_path:
                    path.unlink()
            with contextlib.suppress(OSError):
                self._workdir.rmdir()

    def __enter__(self) -> ImpairedLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_link(
    left: str,
    right: str,
    forward: Impairment,
    backward: Impairment,
    *,
    addresses: tuple[str, str],
    seed: int,
    stats: Path | None,
) -> None:
    """The ``link`` command: build, print the counters every 2 s until Ctrl-C, clean up."""
    link = ImpairedLink(left, right, forward, backward, addresses=addresses, seed=seed, stats=stats)
    try:
        print(
            f"{left} {LEFT_IF} {link.left_address} <-> {link.middle_ns} <-> "
            f"{right} {RIGHT_IF} {link.right_address}\nforward {forward.describe()}; "
            f"backward {backward.describe()}\nrun processes with: ip netns exec {left}|{right} "
            "COMMAND   (Ctrl-C ends and removes what was made)",
            flush=True,
        )
        while True:
            time.sleep(2.0)
            for name, c in link.counters().items():
                mean = c.delay_total / c.forwarded if c.forwarded else 0.0
                print(
                    f"{name}: {c.forwarded} forwarded, {c.lost} lost, {c.overflowed} "
                    f"overflowed, delay mean {mean * 1000:.1f} ms max {c.delay_max * 1000:.1f}",
                    flush=True,
                )
    except KeyboardInterrupt:
        pass
    finally:
        link.close()
