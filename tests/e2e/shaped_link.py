"""A shaped downlink to one subscriber: two network namespaces, a veth pair and ``tc tbf``.

::

    namespace <tag>-sfu                             namespace <tag>-sub
    lo 127.0.0.1  the server, the publisher and     lo 127.0.0.1
                  the unshaped subscriber
    bwe0 10.99.0.1/30 <----------- veth ----------> bwe1 10.99.0.2/30  the shaped subscriber
    root qdisc of bwe0: tbf while shaped (the downlink server -> shaped subscriber)

The server gathers ICE candidates on 127.0.0.1 and 10.99.0.1 and serves HTTP on both. The
shaped subscriber reaches it only through the veth, signaling included, so everything the
server sends it passes bwe0's token bucket: a rate limit with a queue of ``latency`` and tail
drop beyond it, as the downlink of a slow access link. The others talk over lo and never touch
bwe0. The addresses exist only inside the two namespaces and neither has a route out (the
network rule). This kernel has no netem: random loss is the subscriber's own (see
``shaped_subscriber``). Needs root for ``ip netns`` and ``tc``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fractions
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np

from loadtest.media import VIDEO_CLOCK, EncodedClip
from sfu_client.media import realtime_vp8_encoder

REPO = Path(__file__).resolve().parents[2]
SERVER_ADDRESS = "10.99.0.1"
SUBSCRIBER_ADDRESS = "10.99.0.2"
PREFIX = 30
SERVER_IF, SUBSCRIBER_IF = "bwe0", "bwe1"
LISTENING = re.compile(r"aiosfu listening on http://[^\s:]+:(\d+)")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
CLONE_NEWNET = 0x40000000
#: Scheduling priority of the call's processes and of the publisher's thread. The machine is
#: shared: at nice 0 another user's browser tests starve the call's event loops for hundreds
#: of ms, and a subscriber then shows a freeze (and its feedback a delay) the network never
#: caused. Ahead of them, the call's few percent of a core come on time.
NICE = -5

_libc = ctypes.CDLL(None, use_errno=True)


class LinkUnavailable(RuntimeError):
    """The machine cannot make the namespaces (not root, no ``ip``/``tc``)."""


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def check_available() -> None:
    """Raise :class:`LinkUnavailable` with the reason when the harness cannot run here."""
    if os.geteuid() != 0:
        raise LinkUnavailable("shaped-link tests need root (ip netns, tc); run them as root")
    for tool in ("/usr/sbin/ip", "/usr/sbin/tc"):
        if not os.access(tool, os.X_OK):
            raise LinkUnavailable(f"{tool} is missing (Debian package iproute2)")


# --- the link ---


@dataclass(frozen=True, slots=True)
class QdiscStats:
    """Counters of bwe0's root qdisc (zero while unshaped: veth's noqueue counts nothing)."""

    bytes: int
    packets: int
    drops: int
    backlog: int


class ShapedLink:
    """The two namespaces and the veth between them; :meth:`close` removes everything."""

    def __init__(self, tag: str | None = None) -> None:
        check_available()
        tag = tag or f"aiosfu{os.getpid()}"
        self.server_ns = f"{tag}-sfu"
        self.subscriber_ns = f"{tag}-sub"
        #: the tbf rate in bit/s while shaped, else None
        self.rate: int | None = None
        made: list[str] = []
        try:
            for ns in (self.server_ns, self.subscriber_ns):
                _run("ip", "netns", "add", ns)
                made.append(ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run(
                "ip", "-n", self.server_ns, "link", "add", SERVER_IF, "type", "veth",
                "peer", "name", SUBSCRIBER_IF, "netns", self.subscriber_ns,
            )  # fmt: skip
            for ns, interface, address in (
                (self.server_ns, SERVER_IF, SERVER_ADDRESS),
                (self.subscriber_ns, SUBSCRIBER_IF, SUBSCRIBER_ADDRESS),
            ):
                # no IPv6: no router solicitations or link-local candidates on the link
                _run("ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                     f"net.ipv6.conf.{interface}.disable_ipv6=1")  # fmt: skip
                _run("ip", "-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", interface)
                _run("ip", "-n", ns, "link", "set", interface, "up")
        except BaseException:
            for ns in made:
                subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
            raise

    def close(self) -> None:
        """Delete both namespaces (the veth goes with them). Stop their processes first."""
        for ns in (self.server_ns, self.subscriber_ns):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)

    def __enter__(self) -> ShapedLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def command(self, ns: str, *argv: str) -> list[str]:
        """``argv`` run inside namespace ``ns`` at priority :data:`NICE` (``ip netns exec`` and
        ``nice`` both exec: the process keeps the PID)."""
        return ["ip", "netns", "exec", ns, "nice", "-n", str(NICE), *argv]

    # --- shaping ---

    def shape(self, rate: int, *, burst: int | None = None, latency: float = 0.15) -> None:
        """Limit the downlink to ``rate`` bit/s: a token bucket of ``burst`` bytes (default
        10 ms of the rate, at least 3000) and a queue of ``latency`` seconds, tail drop beyond
        it. Replaces any limit in place (packets already queued stay)."""
        burst = burst or max(3000, rate // 800)
        _run(
            "tc", "-n", self.server_ns, "qdisc", "replace", "dev", SERVER_IF, "root", "tbf",
            "rate", f"{rate}bit", "burst", str(burst), "latency", f"{round(latency * 1000)}ms",
        )  # fmt: skip
        self.rate = rate

    def lift(self) -> None:
        """No limit any more (the root qdisc goes back to veth's noqueue)."""
        if self.rate is not None:
            _run("tc", "-n", self.server_ns, "qdisc", "del", "dev", SERVER_IF, "root")
            self.rate = None

    def qdisc_stats(self) -> QdiscStats:
        return parse_qdisc(
            _run("tc", "-n", self.server_ns, "-s", "-j", "qdisc", "show", "dev", SERVER_IF)
        )

    # --- this thread in the server's namespace ---

    def entered(self) -> contextlib.AbstractContextManager[None]:
        """Run the body with this thread in the server's namespace (sockets it makes, the
        publisher's and a test's clients', live there and reach the server on 127.0.0.1) and
        at priority :data:`NICE`."""
        return in_namespace(self.server_ns, NICE)


@contextlib.contextmanager
def in_namespace(name: str, nice: int | None = None) -> Iterator[None]:
    """This thread in network namespace ``name`` (``ip netns``), and at priority ``nice`` if
    given (Linux: ``setpriority(PRIO_PROCESS, 0)`` is this thread's), for the body."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    priority = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        _setns(target, name)
        try:
            if nice is not None:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
            yield
        finally:
            os.setpriority(os.PRIO_PROCESS, 0, priority)
            _setns(original, "the original namespace")
    finally:
        os.close(target)
        os.close(original)


def parse_qdisc(output: str | bytes) -> QdiscStats:
    """The root qdisc's counters from ``tc -s -j qdisc show``."""
    qdiscs: list[dict[str, Any]] = json.loads(output or "[]")
    root = next((q for q in qdiscs if q.get("root")), {})
    return QdiscStats(*(int(root.get(key, 0)) for key in ("bytes", "packets", "drops", "backlog")))


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns to {what}: {os.strerror(errno)}")


def interface_counters(pid: int, interface: str) -> tuple[int, int, int, int]:
    """(rx bytes, rx packets, tx bytes, tx packets) of ``interface`` in ``pid``'s namespace."""
    for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]:
        name, _, fields = line.partition(":")
        if name.strip() == interface:
            values = [int(v) for v in fields.split()]
            return values[0], values[1], values[8], values[9]
    raise LookupError(f"no interface {interface} in the namespace of process {pid}")


# --- the server ---


class ServerSite(Protocol):
    """Where :class:`ServerProcess` runs: a :class:`ShapedLink`, or a test's own namespaces
    (``tests/e2e/test_loss_jitter.py``)."""

    @property
    def server_ns(self) -> str: ...

    def command(self, ns: str, *argv: str) -> list[str]: ...


class ServerProcess:
    """The real server (``python -m signaling.cli serve``) in the server's namespace (on all of
    its addresses: only the test's namespaces reach them, so without access keys)."""

    def __init__(self, link: ServerSite, workdir: Path, *extra: str) -> None:
        self.stdout_path = workdir / "server.stdout"
        self.stderr_path = workdir / "server.stderr"
        command = link.command(
            link.server_ns, sys.executable, "-m", "signaling.cli", "serve",
            "--host", "0.0.0.0", "--insecure", "--port", "0", "--log-format", "json",
            "--ice-host", "127.0.0.1", "--ice-host", SERVER_ADDRESS, "--workers", "1", *extra,
        )  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err)
        self.port = self._wait_listening()

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            match = LISTENING.search(self.stdout_path.read_text(errors="replace"))
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}\n{self.logs()}")
            time.sleep(0.05)
        self.process.kill()
        self.process.wait()
        raise RuntimeError(f"server did not listen within {START_TIMEOUT} s\n{self.logs()}")

    def stop(self) -> int:
        """SIGTERM, then its exit code (killed after STOP_TIMEOUT: returns -SIGKILL)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def logs(self, tail: int = 200) -> str:
        parts = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- server {label} ---\n" + "\n".join(lines))
        return "\n".join(parts)


# --- the publisher's media ---

#: the layers of the test publisher, smallest first: (rid, width, height, bit/s)
LAYERS = (("q", 160, 90, 100_000), ("h", 320, 180, 300_000), ("f", 640, 360, 1_200_000))
FPS = 20
CLIP_SECONDS = 6.0  # the clips loop; each loop starts at their only keyframe
NOISE = 24  # luma noise amplitude: incompressible detail, so the encoder spends its bitrate


def encode_layer(width: int, height: int, bitrate: int, fps: int, seconds: float) -> EncodedClip:
    """VP8 at ``bitrate`` (libvpx CBR, realtime) of a scrolling texture with temporal noise.

    A smooth pattern compresses to a fraction of the rate asked for (loadtest's 640x360 clip
    at 1.2 Mbit/s comes out at ~0.4): the layers would not differ enough for a 400 kbit/s
    link to tell them apart. The clip starts at a keyframe forced after a second of warm-up,
    as a running encoder makes one when asked (the first keyframe of an encoder is several
    times larger), and has no other."""
    codec = realtime_vp8_encoder(width, height, bitrate, fractions.Fraction(1, fps))
    codec.framerate = fractions.Fraction(fps)
    # keyframes at most 3 frames' worth (libvpx rc_max_intra_bitrate_pct, as WebRTC caps them)
    codec.options = {**codec.options, "max-intra-rate": "300"}
    rng = np.random.default_rng(width)
    texture = rng.integers(32, 224, (height // 4 + 1, width // 4 + 1), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8), dtype=np.uint8))  # 2x the frame, to scroll
    luma, count, warmup = width * height, max(1, round(seconds * fps)), fps
    planes = np.full(luma * 3 // 2, 128, dtype=np.uint8)
    frames: list[bytes] = []
    for index in range(warmup + count):
        y = np.roll(texture, (index, 2 * index), axis=(0, 1))[:height, :width].astype(np.int16)
        y += rng.integers(-NOISE, NOISE + 1, y.shape, dtype=np.int16)
        planes[:luma] = np.clip(y, 0, 255).astype(np.uint8).ravel()
        frame = av.VideoFrame.from_ndarray(planes.reshape(height * 3 // 2, width), format="yuv420p")
        frame.pts = index
        if index == warmup:
            frame.pict_type = av.video.frame.PictureType.I
        frames.extend(bytes(p) for p in codec.encode(frame))
    frames.extend(bytes(p) for p in codec.encode(None))
    return EncodedClip(
        "video", tuple(frames[warmup : warmup + count]), 1.0 / fps, round(VIDEO_CLOCK / fps),
        fractions.Fraction(1, VIDEO_CLOCK),
    )  # fmt: skip


@functools.cache
def simulcast_clips(fps: int = FPS) -> Mapping[str, EncodedClip]:
    """Each layer encoded once (a few seconds of CPU per process), played by
    ``PreEncodedLayers``: the publisher costs no encoding during the test."""
    return {
        rid: encode_layer(width, height, bitrate, fps, CLIP_SECONDS)
        for rid, width, height, bitrate in LAYERS
    }


def layer_of_width(width: int) -> str | None:
    return next((rid for rid, w, _, _ in LAYERS if w == width), None)
