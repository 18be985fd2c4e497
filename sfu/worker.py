"""A worker process: some of the server's rooms, served over a UNIX stream (issue 13).

    python -m sfu.worker --index K --channel-fd F

The supervisor (``signaling.workers.WorkerPool``) starts it with one end of a socket pair as
descriptor F. Its first frame is ``{"op": "configure", "media": <MediaConfig>, "log": {"format",
"level"}}``; the worker sets up the media plane as ``sfu serve`` does in-process, answers
``{"op": "ready", "pid": ...}``, and from then on is a :class:`~sfu.remote.host.ServiceHost` around
its own :class:`~sfu.service.Sfu`, writing a ``load`` frame every :data:`LOAD_INTERVAL` (its
CPU use, packets sent and counts: what placement weighs and the pool watches for a hung loop).
It never outlives the supervisor (``PR_SET_PDEATHSIG``) and exits when the stream ends, its
sessions having left. Media never crosses the stream: ICE runs from this process's own sockets.
The design is docs/design/scale-out-plan.md §3.1 and §3.2.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

import structlog
import uvloop
from prometheus_client import generate_latest
from pydantic import TypeAdapter, ValidationError

from sfu.config import MediaConfig, udp_port_taken
from sfu.log import configure_logging
from sfu.media.aiortc_bridge import set_ice_host_addresses, set_udp_receive_buffer
from sfu.remote.frames import FrameError, read_frame, write_frame
from sfu.remote.host import ServiceHost
from sfu.service import Sfu

log = structlog.get_logger("sfu.worker")

#: Seconds between load frames; the pool takes a worker silent for several as hung.
LOAD_INTERVAL = 1.0
_PR_SET_PDEATHSIG = 1
CONFIG = TypeAdapter(MediaConfig)


def _die_with_parent() -> None:
    """SIGKILL this process when the supervisor dies (Linux; elsewhere the stream's end does)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


async def _reports(service: Sfu, writer: asyncio.StreamWriter) -> None:
    cpu, packets, at = time.process_time(), service.media_totals().packets_sent, time.monotonic()
    while not writer.is_closing():
        await asyncio.sleep(LOAD_INTERVAL)
        now_cpu, now_packets, now = (
            time.process_time(), service.media_totals().packets_sent, time.monotonic()
        )  # fmt: skip
        elapsed = max(now - at, 1e-6)
        counts = await service.stats()
        write_frame(
            writer,
            {
                "op": "load", "cpu": (now_cpu - cpu) / elapsed,
                "packetsOut": (now_packets - packets) / elapsed, **counts,
            },
        )  # fmt: skip
        cpu, packets, at = now_cpu, now_packets, now


async def serve(index: int, channel: socket.socket) -> None:
    reader, writer = await asyncio.open_connection(sock=channel)
    first = await read_frame(reader)
    if first is None or first.get("op") != "configure":
        raise SystemExit(f"worker {index}: the supervisor sent no configure frame")
    settings: Any = first.get("log", {})
    configure_logging(settings.get("format", "console"), settings.get("level", "info"))
    try:
        config = CONFIG.validate_python(first.get("media", {}))
    except ValidationError as exc:
        raise SystemExit(f"worker {index}: bad media configuration: {exc}") from None
    set_ice_host_addresses(config.ice_hosts)
    set_udp_receive_buffer(config.udp_receive_buffer)
    service = Sfu(config)
    try:
        await service.start()  # its own UDP port (--udp-port + its index), if any
    except OSError as exc:  # the supervisor says it: a clear line, not this process's traceback
        write_frame(writer, {"op": "failed", "error": udp_port_taken(config, exc)})
        await writer.drain()
        await service.close("server-shutdown")
        raise SystemExit(1) from None
    service.serving()
    write_frame(writer, {"op": "ready", "pid": os.getpid(), "index": index})
    await writer.drain()
    log.info("worker ready", index=index, pid=os.getpid())
    reports = asyncio.ensure_future(_reports(service, writer))
    try:
        registry = service.metrics_registry()

        async def metrics() -> str:
            return generate_latest(registry).decode()

        await ServiceHost(service, reader, writer, extra_ops={"metrics": metrics}).run()
    except FrameError as exc:
        log.error("worker stream broken", index=index, error=str(exc))
    finally:
        reports.cancel()
        await service.close("server-shutdown")
    log.info("worker stopped", index=index)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sfu.worker", description=__doc__)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the supervisor's to act on
    channel = socket.socket(fileno=args.channel_fd)
    uvloop.run(serve(args.index, channel))


if __name__ == "__main__":
    main()
