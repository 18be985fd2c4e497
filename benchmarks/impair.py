"""A lossy, late, jittery link in userspace, for a kernel without ``netem``.

::

    python -m benchmarks.impair link LEFT RIGHT --both loss=5%,delay=50ms,jitter=50ms
    python -m benchmarks.impair bridge IF_A IF_B --forward loss=2% --backward delay=20ms

``link`` puts an impaired link between two network namespaces (made if missing) until Ctrl-C,
then removes what it made (``benchmarks/impair_link.py``; tests use its ``ImpairedLink``)::

    LEFT                     <RIGHT>-imp: the bridge (this module)                RIGHT
    imp0 10.99.0.1/30 <-veth-> impl ==[AF_PACKET, impaired]== impr <-veth-> imp1 10.99.0.2/30

``bridge`` is the forwarding loop alone, run inside the middle namespace: every Ethernet frame
read on one interface (AF_PACKET, so below IP: any process in LEFT or RIGHT, a browser too, is
impaired) is written to the other when its :class:`Schedule` says, or dropped. One thread, a
selector and a heap of departures; no per-packet timers.

Per direction (an :class:`Impairment`, parsed by :func:`parse_impairment`):

- ``loss``: each frame dropped with this probability (Bernoulli, a seeded ``random.Random``).
- ``rate`` (bit/s) and ``queue``: a bottleneck that sends one frame after another at ``rate``,
  with a FIFO of at most ``queue`` seconds before tail drop (as ``tc tbf`` with ``latency``).
- ``delay`` and ``jitter``: after the bottleneck each frame waits ``delay`` plus a random term,
  uniform in [-jitter, +jitter] (``dist=uniform``, the default) or normal with standard
  deviation ``jitter`` (``dist=normal``); never less than 0.
- No reordering unless ``reorder``: a frame never leaves before the one ahead of it (it waits
  for it), as on a real access link. netem reorders when jitter exceeds the packet spacing; with
  ``reorder`` this does too.

ARP passes unimpaired and at once: a lost neighbour probe would read as a 1 s outage that no IP
link's loss model describes. Counters (:class:`Counters`) go to ``--stats`` as JSON every 0.2 s
and at exit; SIGHUP re-reads ``--config`` (the impairments may change mid-run); SIGTERM ends.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import math
import os
import random
import re
import selectors
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

Distribution = Literal["uniform", "normal"]
DIRECTIONS = ("forward", "backward")  # forward: the first interface's frames to the second
STATS_INTERVAL = 0.2
ETH_P_ALL = 0x0003
ETHERTYPE_ARP = b"\x08\x06"
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23  # linux/if_packet.h (4.20+)
SOCKET_BUFFER = 4 << 20
READS_PER_WAKEUP = 256  # frames read from one socket before the due ones are sent


# --- the model ---


@dataclass(frozen=True, slots=True)
class Impairment:
    """One direction's impairment; the default impairs nothing. Times in seconds."""

    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    distribution: Distribution = "uniform"
    reorder: bool = False
    rate: int | None = None  # bit/s; None: no bottleneck
    queue: float = 0.1  # the bottleneck's FIFO, in seconds at ``rate``

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be within 0..100 %, got {self.loss:.2%}")
        if self.delay < 0 or self.jitter < 0 or self.queue <= 0:
            raise ValueError("delay and jitter must be >= 0 and queue > 0")
        if self.distribution not in ("uniform", "normal"):
            raise ValueError(f"dist must be uniform or normal, got {self.distribution!r}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be > 0 bit/s, got {self.rate}")

    def describe(self) -> str:
        parts = [f"loss={self.loss:.3g}"] if self.loss else []
        if self.delay or self.jitter:
            parts.append(f"delay={self.delay * 1000:g}ms")
        if self.jitter:
            parts += [f"jitter={self.jitter * 1000:g}ms", f"dist={self.distribution}"]
        if self.rate is not None:
            parts += [f"rate={self.rate}", f"queue={self.queue * 1000:g}ms"]
        if self.reorder:
            parts.append("reorder")
        return ",".join(parts) or "none"


_TIME = re.compile(r"^([\d.]+)(us|ms|s)?$")
_RATE = re.compile(r"^([\d.]+)(bit|kbit|mbit|gbit)?$", re.IGNORECASE)
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0}
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, None: 1}


def parse_impairment(spec: str) -> Impairment:
    """``loss=5%,delay=50ms,jitter=20ms,dist=normal,rate=2mbit,queue=100ms,reorder`` (any
    subset, any order; ``none`` or empty: nothing). Loss as a percentage or a fraction; times
    in us/ms/s (bare: seconds); rates in bit/kbit/mbit/gbit per second (bare: bit/s)."""
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        try:
            values.update(_setting(item, values.get("reorder", False)))
        except ValueError:
            raise ValueError(
                f"cannot read {item!r} (see --help for the impairment syntax)"
            ) from None
    return Impairment(**values)


def _setting(item: str, reorder: bool) -> dict[str, Any]:
    key, _, value = item.partition("=")
    if item in ("none", "reorder"):
        return {"reorder": item == "reorder" or reorder}
    if key == "loss" and value:
        number = float(value.removesuffix("%"))
        return {"loss": number / 100 if value.endswith("%") else number}
    if key in ("delay", "jitter", "queue") and (match := _TIME.match(value)):
        return {key: float(match[1]) * _TIME_UNITS[match[2]]}
    if key == "rate" and (match := _RATE.match(value)):
        return {"rate": round(float(match[1]) * _RATE_UNITS[(match[2] or "bit").lower()])}
    if key == "dist" and value in ("uniform", "normal"):
        return {"distribution": value}
    raise ValueError(item)


class Rng(Protocol):
    """What a :class:`Schedule` draws from (``random.Random``, or a test's scripted one)."""

    def random(self) -> float: ...
    def uniform(self, a: float, b: float) -> float: ...
    def gauss(self, mu: float, sigma: float) -> float: ...


@dataclass(slots=True)
class Counters:
    """One direction's totals since the start."""

    received: int = 0  # frames offered to the impairment
    forwarded: int = 0  # written out
    lost: int = 0  # dropped at random (``loss``)
    overflowed: int = 0  # tail-dropped by the bottleneck's full queue
    send_errors: int = 0  # the kernel refused to write (counted apart from forwarded)
    delayed: int = 0  # forwarded later than they arrived (by more than 1 ms)
    passed: int = 0  # ARP, forwarded at once and unimpaired (not in ``received``)
    bytes_forwarded: int = 0
    delay_total: float = 0.0  # seconds, over the forwarded frames: their mean delay
    delay_max: float = 0.0
    late_max: float = 0.0  # the most a frame left after its time: the bridge's own lateness


class Schedule:
    """When each frame of one direction leaves, or whether it is dropped; pure: the caller
    gives the time (:meth:`admit`'s ``now``) and the random source."""

    def __init__(self, impairment: Impairment, rng: Rng) -> None:
        self.impairment = impairment  # may be replaced mid-run; the order kept still holds
        self.counters = Counters()
        self._rng = rng
        self._link_free = -math.inf  # when the bottleneck has sent everything queued
        self._last_departure = -math.inf

    def admit(self, now: float, size: int) -> float | None:
        """The departure time of a frame of ``size`` bytes arriving at ``now``; None: dropped."""
        imp, counters = self.impairment, self.counters
        counters.received += 1
        if imp.loss and self._rng.random() < imp.loss:
            counters.lost += 1
            return None
        sent = now
        if imp.rate is not None:
            start = max(now, self._link_free)
            if start - now > imp.queue:
                counters.overflowed += 1
                return None
            sent = self._link_free = start + size * 8 / imp.rate
        departure = sent + imp.delay
        if imp.jitter:
            if imp.distribution == "uniform":
                departure += self._rng.uniform(-imp.jitter, imp.jitter)
            else:
                departure += self._rng.gauss(0.0, imp.jitter)
        departure = max(departure, sent)
        if not imp.reorder:
            departure = max(departure, self._last_departure)
        self._last_departure = max(self._last_departure, departure)
        return departure

    def sent(self, arrival: float, due: float, now: float, size: int, ok: bool) -> None:
        """A frame admitted at ``arrival`` to leave at ``due`` was written at ``now`` (``ok``)
        or refused."""
        counters = self.counters
        if not ok:
            counters.send_errors += 1
            return
        waited = max(0.0, now - arrival)
        counters.late_max = max(counters.late_max, now - due)
        counters.forwarded += 1
        counters.bytes_forwarded += size
        counters.delayed += waited > 0.001
        counters.delay_total += waited
        counters.delay_max = max(counters.delay_max, waited)


# --- the forwarding loop ---


class Endpoint(Protocol):
    """A socket as the bridge uses it (AF_PACKET; a datagram socketpair in tests)."""

    def fileno(self) -> int: ...
    def recvfrom(self, size: int, /) -> tuple[bytes, Any]: ...
    def send(self, data: bytes, /) -> int: ...


@dataclass(order=True, slots=True)
class _Pending:
    departure: float
    order: int
    arrival: float = field(compare=False)
    direction: int = field(compare=False)
    frame: bytes = field(compare=False)


class Bridge:
    """Forwards frames between ``ends[0]`` and ``ends[1]`` through one :class:`Schedule` each
    way (``schedules[0]``: what ``ends[0]`` reads, written to ``ends[1]``)."""

    def __init__(
        self,
        ends: tuple[Endpoint, Endpoint],
        schedules: tuple[Schedule, Schedule],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ends = ends
        self.schedules = schedules
        self._clock = clock
        self._heap: list[_Pending] = []
        self._order = itertools.count()
        self._selector = selectors.DefaultSelector()
        for index, end in enumerate(ends):
            self._selector.register(end.fileno(), selectors.EVENT_READ, index)

    @property
    def held(self) -> int:
        return len(self._heap)

    def step(self, timeout: float) -> None:
        """Wait at most ``timeout`` (less if a frame is due sooner), read what came, send what
        is due."""
        if self._heap:
            timeout = min(timeout, max(0.0, self._heap[0].departure - self._clock()))
        for key, _ in self._selector.select(timeout):
            self._read(key.data)
        now = self._clock()
        heap = self._heap
        while heap and heap[0].departure <= now:
            pending = heapq.heappop(heap)
            self._send(pending.direction, pending.frame, pending.arrival, pending.departure, now)

    def _read(self, direction: int) -> None:
        end, schedule = self.ends[direction], self.schedules[direction]
        for _ in range(READS_PER_WAKEUP):
            try:
                frame, address = end.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            if isinstance(address, tuple) and address[2] == socket.PACKET_OUTGOING:
                continue  # our own write, seen again (kernels without PACKET_IGNORE_OUTGOING)
            now = self._clock()
            if frame[12:14] == ETHERTYPE_ARP:
                schedule.counters.passed += 1
                self._write(direction, frame)
                continue
            departure = schedule.admit(now, len(frame))
            if departure is None:
                continue
            if departure <= now and not self._heap:
                self._send(direction, frame, now, departure, now)
            else:
                heapq.heappush(
                    self._heap, _Pending(departure, next(self._order), now, direction, frame)
                )

    def _send(self, direction: int, frame: bytes, arrival: float, due: float, now: float) -> None:
        ok = self._write(direction, frame)
        self.schedules[direction].sent(arrival, due, now, len(frame), ok)

    def _write(self, direction: int, frame: bytes) -> bool:
        try:
            self.ends[1 - direction].send(frame)
        except OSError:  # ENOBUFS and the like: a frame lost, as a full device queue loses it
            return False
        return True

    def close(self) -> None:
        self._selector.close()


def packet_socket(interface: str) -> socket.socket:
    """A non-blocking AF_PACKET socket that reads every frame ``interface`` receives (not
    those it sends) and writes whole Ethernet frames to it."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        for option in (33, 32):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE (root), else the capped ones
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            except OSError:
                plain = socket.SO_RCVBUF if option == 33 else socket.SO_SNDBUF
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
        sock.bind((interface, ETH_P_ALL))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def counters_json(schedules: Sequence[Schedule], held: int) -> dict[str, Any]:
    return {
        "t": time.monotonic(),
        "held": held,
        **{
            name: {**asdict(s.counters), "impairment": asdict(s.impairment)}
            for name, s in zip(DIRECTIONS, schedules, strict=True)
        },
    }


def read_counters(data: dict[str, Any]) -> dict[str, Counters]:
    """The :class:`Counters` of each direction from what ``--stats`` holds."""
    names = {f.name for f in fields(Counters)}
    return {d: Counters(**{k: v for k, v in data[d].items() if k in names}) for d in DIRECTIONS}


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


def load_config(path: Path) -> tuple[Impairment, Impairment]:
    """The two impairments from a JSON file: {"forward": {...}, "backward": {...}}."""
    data = json.loads(path.read_text())
    forward, backward = (Impairment(**data.get(d, {})) for d in DIRECTIONS)
    return forward, backward


def save_config(path: Path, forward: Impairment, backward: Impairment) -> None:
    _write_atomically(path, {"forward": asdict(forward), "backward": asdict(backward)})


def run_bridge(
    interfaces: tuple[str, str],
    impairments: tuple[Impairment, Impairment],
    seed: int,
    stats: Path | None,
    config: Path | None,
) -> None:
    """Forward between the two interfaces until SIGTERM or SIGINT (this namespace's)."""
    flags = {"stop": False, "reload": False}

    def on_signal(signum: int, frame: object) -> None:
        flags["reload" if signum == signal.SIGHUP else "stop"] = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    schedules = (
        Schedule(impairments[0], random.Random(seed * 2)),
        Schedule(impairments[1], random.Random(seed * 2 + 1)),
    )
    with contextlib.ExitStack() as stack:
        ends = tuple(stack.enter_context(packet_socket(i)) for i in interfaces)
        bridge = Bridge((ends[0], ends[1]), schedules)
        stack.callback(bridge.close)
        report_at = 0.0
        while not flags["stop"]:
            if flags["reload"] and config is not None:
                flags["reload"] = False
                for schedule, impairment in zip(schedules, load_config(config), strict=True):
                    schedule.impairment = impairment
            now = time.monotonic()
            if stats is not None and now >= report_at:
                _write_atomically(stats, counters_json(schedules, bridge.held))
                report_at = now + STATS_INTERVAL
            bridge.step(STATS_INTERVAL)
        if stats is not None:
            _write_atomically(stats, counters_json(schedules, bridge.held))


# --- the command ---

SPEC_HELP = (
    "an impairment: loss=5%%,delay=50ms,jitter=50ms,dist=uniform|normal,rate=2mbit,"
    "queue=100ms,reorder (any subset; 'none': nothing)"
)


def _directions(args: argparse.Namespace) -> tuple[Impairment, Impairment]:
    both = parse_impairment(args.both)
    forward = parse_impairment(args.forward) if args.forward is not None else both
    backward = parse_impairment(args.backward) if args.backward is not None else both
    return forward, backward


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.impair",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="forward: LEFT (or IF_A) to RIGHT (or IF_B); backward: the other way",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    link = commands.add_parser("link", help="an impaired link between two namespaces (root)")
    link.add_argument("left", help="namespace of the first end (made if missing)")
    link.add_argument("right", help="namespace of the second end (made if missing)")
    link.add_argument("--left-address", default="10.99.0.1/30")
    link.add_argument("--right-address", default="10.99.0.2/30")
    bridge = commands.add_parser("bridge", help="the forwarding loop, in this namespace (root)")
    bridge.add_argument("interfaces", nargs=2, metavar="IF")
    bridge.add_argument("--config", type=Path, help="JSON impairments (re-read on SIGHUP)")
    for command in (link, bridge):
        command.add_argument("--both", default="none", help=f"both ways: {SPEC_HELP}")
        command.add_argument("--forward", help="first to second end (default: --both)")
        command.add_argument("--backward", help="second to first end (default: --both)")
        command.add_argument("--seed", type=int, default=1, help="of the random draws")
        command.add_argument("--stats", type=Path, help="write the counters here (JSON)")
    args = parser.parse_args(argv)
    try:
        forward, backward = _directions(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "bridge":
        if args.config is not None:
            if args.config.exists():
                forward, backward = load_config(args.config)
            else:
                save_config(args.config, forward, backward)
        a, b = args.interfaces
        run_bridge((a, b), (forward, backward), args.seed, args.stats, args.config)
        return
    from benchmarks.impair_link import run_link  # the namespaces: only for this command

    run_link(
        args.left, args.right, forward, backward,
        addresses=(args.left_address, args.right_address), seed=args.seed, stats=args.stats,
    )  # fmt: skip


if __name__ == "__main__":
    main()
