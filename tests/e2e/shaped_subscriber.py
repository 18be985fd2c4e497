"""A Python subscriber in a process of its own, and the handle a test drives it with.

The process (``python -m tests.e2e.shaped_subscriber``, started in a namespace by
:meth:`SubscriberProcess.start`) joins a room, receives the publisher's video, decodes it and
prints one JSON object a line on stdout, each with ``t`` (``time.monotonic()``, one clock for
every process on the machine) and ``e``:

- ``joined`` (``id``), ``track`` (``trackId``), ``closed`` (``reason``);
- ``frame``: a decoded frame (``w``, ``h``); ``keyframe``: the first packet of a VP8 key frame
  arrived (``w``, ``h`` from its header; retransmissions not counted);
- ``msg``: a server message other than negotiation (``data``: connectionQuality, streamState..);
- ``rx`` every 0.25 s: bytes and packets the connection received (``bytes``, ``packets``, after
  the impairment), RTP packets lost as the receiver counts them (``lost``), the interface's
  received bytes (``link``, with ``--interface``), datagrams the impairment dropped and the
  event loop's longest late wake-up (``lag``, see :func:`loop_lag`).

A line ``quit`` on stdin (or its end) makes it leave and exit.

Loss (``--loss``): this kernel has no netem, so the process drops a seeded random fraction of the
SRTP and SRTCP datagrams it receives (RFC 7983: first byte 128..191) before anything reads them,
STUN and DTLS excepted so that the connection comes up as it would. It wraps the protocol of
every UDP endpoint the process opens (``loop.create_datagram_endpoint``, public asyncio), so the
transport-wide feedback reports the dropped packets as lost, as on a lossy link.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from sfu.media.aiortc_bridge import tap_rtp
from sfu.rtp.header import payload_bounds
from sfu.rtp.vp8 import keyframe_size
from sfu_client import SfuClient

REPO = Path(__file__).resolve().parents[2]
REPORT_INTERVAL = 0.25
LAG_PERIOD = 0.05
NEGOTIATION = frozenset({"offer", "answer", "candidate"})
TRACK_TIMEOUT = 20.0


# --- the impairment ---


class ReceiveLoss:
    """Drops ``fraction`` of the media datagrams received, from ``random.Random(seed)``."""

    def __init__(self, fraction: float, seed: int) -> None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {fraction}")
        self.fraction = fraction
        self.dropped = 0
        self._rng = random.Random(seed)

    def drops(self, data: bytes) -> bool:
        if not data or not 127 < data[0] < 192 or self._rng.random() >= self.fraction:
            return False
        self.dropped += 1
        return True

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Impair every UDP endpoint ``loop`` opens from now on."""
        create = loop.create_datagram_endpoint

        async def create_datagram_endpoint(
            factory: Callable[[], asyncio.DatagramProtocol], *args: Any, **kwargs: Any
        ) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
            return await create(lambda: self._wrap(factory()), *args, **kwargs)

        setattr(loop, "create_datagram_endpoint", create_datagram_endpoint)  # noqa: B010

    def _wrap(self, protocol: asyncio.DatagramProtocol) -> asyncio.DatagramProtocol:
        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            if not self.drops(data):
                type(protocol).datagram_received(protocol, data, addr)

        setattr(protocol, "datagram_received", datagram_received)  # noqa: B010
        return protocol


# --- the process ---


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"e": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


def _link_bytes(interface: str | None) -> int | None:
    if interface is None:
        return None
    for line in Path("/proc/self/net/dev").read_text().splitlines()[2:]:
        name, _, fields = line.partition(":")
        if name.strip() == interface:
            return int(fields.split()[0])
    return None


async def _run(args: argparse.Namespace) -> None:
    loss = ReceiveLoss(args.loss, args.seed)
    if args.loss:
        loss.install(asyncio.get_running_loop())
    client = await SfuClient.connect(
        args.url,
        args.room,
        args.name,
        ice_hosts=[args.ice_host],
        transport_cc=args.transport_cc == "on",
    )
    _emit("joined", id=client.participant_id)
    tasks = [
        asyncio.create_task(_messages(client)),
        asyncio.create_task(_counters(client, args.interface, loss)),
        asyncio.create_task(_frames(client, args.publisher)),
    ]
    quit_ = asyncio.create_task(_until_quit())
    try:
        # a task that ends (its track ended, a bug) ends the process with an error: the
        # harness then fails the test with this process's stderr
        await asyncio.wait([quit_, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                task.result()
                raise RuntimeError(f"{task.get_coro()} returned")
    finally:
        for task in (quit_, *tasks):
            task.cancel()
        await asyncio.gather(quit_, *tasks, return_exceptions=True)
        await client.leave()
        _emit("closed", reason=client.close_reason)


async def _until_quit() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"quit":
            return


async def _messages(client: SfuClient) -> None:
    while True:
        message = await client.events.get()
        if message.type not in NEGOTIATION:
            _emit("msg", data=dict(message.data))


async def loop_lag(period: float, ticks: int) -> float:
    """Sleep ``ticks`` x ``period``; the longest a wake-up came late (the loop was busy, or
    the process starved of CPU: a frame gap then is this process's, not the network's)."""
    lag = 0.0
    for _ in range(ticks):
        asleep = time.monotonic()
        await asyncio.sleep(period)
        lag = max(lag, time.monotonic() - asleep - period)
    return lag


async def _counters(client: SfuClient, interface: str | None, loss: ReceiveLoss) -> None:
    while True:
        lag = await loop_lag(LAG_PERIOD, round(REPORT_INTERVAL / LAG_PERIOD))
        received = packets = lost = 0
        for stats in (await client.pc.getStats()).values():
            if stats.type == "transport":
                received += stats.bytesReceived
                packets += stats.packetsReceived
            elif stats.type == "inbound-rtp" and stats.kind == "video":
                lost += stats.packetsLost
        _emit(
            "rx", bytes=received, packets=packets, lost=lost,
            link=_link_bytes(interface), dropped=loss.dropped, lag=round(lag, 4),
        )  # fmt: skip


async def _frames(client: SfuClient, publisher: str) -> None:
    remote = await client.wait_for_track(publisher, "video", TRACK_TIMEOUT)
    _emit("track", trackId=remote.track_id)
    tap_rtp(client.pc.getTransceivers()[0].receiver.transport, _on_rtp)
    while True:
        frame = await remote.track.recv()
        if isinstance(frame, av.VideoFrame):
            _emit("frame", w=frame.width, h=frame.height)


def _on_rtp(packet: bytes, arrival: float) -> None:
    with contextlib.suppress(ValueError):
        size = keyframe_size(packet, *payload_bounds(packet))
        if size is not None:
            _emit("keyframe", w=size[0], h=size[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--publisher", required=True, help="participant id whose video to take")
    parser.add_argument("--ice-host", required=True)
    parser.add_argument("--interface", help="count this interface's received bytes")
    parser.add_argument("--loss", type=float, default=0.0, help="media datagrams to drop, 0..1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--transport-cc", choices=("on", "off"), default="on")
    asyncio.run(_run(parser.parse_args()))


# --- the handle ---


@dataclass
class Observed:
    """What one subscriber process reported, in arrival order."""

    frames: list[tuple[float, int, int]] = field(default_factory=list)  # (t, width, height)
    keyframes: list[tuple[float, int, int]] = field(default_factory=list)  # arrived, not decoded
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    counters: list[dict[str, Any]] = field(default_factory=list)
    participant_id: str | None = None
    track_id: str | None = None
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
        elif kind == "joined":
            self.participant_id = str(event["id"])
        elif kind == "track":
            self.track_id = str(event["trackId"])
        elif kind == "closed":
            self.closed = str(event["reason"])


class SubscriberProcess:
    """A running subscriber process; :attr:`seen` fills as it reports."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.seen = Observed()
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"subscriber-{name}")

    @classmethod
    async def start(
        cls, prefix: list[str], name: str, args: list[str], log_dir: Path
    ) -> SubscriberProcess:
        """Run it with ``args`` (see :func:`main`); ``prefix`` runs it in its namespace."""
        log = log_dir / f"{name}.stderr"
        module = [sys.executable, "-m", "tests.e2e.shaped_subscriber", "--name", name, *args]
        with log.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                *prefix, *module, stdin=asyncio.subprocess.PIPE,
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


if __name__ == "__main__":
    main()
