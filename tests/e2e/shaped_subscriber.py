"""A Python subscriber in a process of its own (``python -m tests.e2e.shaped_subscriber``,
started in a namespace by ``peer_process.PeerProcess``).

It joins a room, receives the publisher's video, decodes it and reports (``peer_process``'s JSON
lines, ``e`` being):

- ``joined`` (``id``), ``track`` (``trackId``), ``closed`` (``reason``);
- ``frame``: a decoded frame (``w``, ``h``); ``keyframe``: the first packet of a VP8 key frame
  arrived (``w``, ``h`` from its header; retransmissions not counted);
- ``msg``: a server message other than negotiation (``data``: connectionQuality, streamState..);
- ``rx`` every 0.25 s: bytes and packets the connection received (``bytes``, ``packets``, after
  the impairment), RTP packets lost as the receiver counts them (``lost``), the interface's
  received bytes (``link``, with ``--interface``), datagrams the impairment dropped and the
  event loop's longest late wake-up (``lag``, see :func:`loop_lag`), the generic NACK, PLI
  and FIR messages it sent (``nacks``, ``plis``, ``firs``: see :class:`SentFeedback`), the
  retransmissions (RTX packets with a payload, RFC 4588) it received (``rtx``) and the video's
  playout (``playout``: :class:`sfu_client.playout.PlayoutStats` as a dict, delays in seconds;
  null with ``--playout off``).

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
import random
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import av

from sfu.media.aiortc_bridge import tap_rtp
from sfu.rtp.header import payload_bounds
from sfu.rtp.vp8 import keyframe_size
from sfu_client import SfuClient
from tests.e2e.peer_process import emit, loop_lag, run_until_quit

REPORT_INTERVAL = 0.25
LAG_PERIOD = 0.05
NEGOTIATION = frozenset({"offer", "answer", "candidate"})
TRACK_TIMEOUT = 20.0
RTX_MAP = re.compile(r"^a=rtpmap:(\d+) rtx/", re.MULTILINE)


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


class SentFeedback:
    """Counts the feedback messages the process sends, by the clear header of each SRTCP
    datagram (RFC 3711 §3.4 leaves the first 8 bytes unencrypted; aiortc sends NACK and PLI as
    compounds of their own): RTPFB FMT 1 (generic NACK, RFC 4585 §6.2.1), PSFB FMT 1 (PLI,
    §6.3.1) and FMT 4 (FIR, RFC 5104 §4.3.1). A receive-only peer sends no RTP, whose payload
    types 72..78 with the marker bit would read the same."""

    def __init__(self) -> None:
        self.nacks = self.plis = self.firs = 0

    def count(self, data: bytes) -> None:
        if len(data) < 8 or not 127 < data[0] < 192:
            return
        kind, fmt = data[1], data[0] & 0x1F
        if kind == 205 and fmt == 1:
            self.nacks += 1
        elif kind == 206 and fmt == 1:
            self.plis += 1
        elif kind == 206 and fmt == 4:
            self.firs += 1

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Count what every UDP endpoint ``loop`` opens from now on sends."""
        create = loop.create_datagram_endpoint

        async def create_datagram_endpoint(
            *args: Any, **kwargs: Any
        ) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
            transport, protocol = await create(*args, **kwargs)
            send = transport.sendto

            def sendto(data: bytes, addr: Any = None) -> None:
                self.count(data)
                send(data, addr)

            setattr(transport, "sendto", sendto)  # noqa: B010
            return transport, protocol

        setattr(loop, "create_datagram_endpoint", create_datagram_endpoint)  # noqa: B010


# --- the process ---


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
    feedback = SentFeedback()
    feedback.install(asyncio.get_running_loop())
    received = Received()
    client = await SfuClient.connect(
        args.url,
        args.room,
        args.name,
        ice_hosts=[args.ice_host],
        transport_cc=args.transport_cc == "on",
        playout_delay=args.playout == "on",
    )
    emit("joined", id=client.participant_id)
    tasks = [
        asyncio.create_task(_messages(client)),
        asyncio.create_task(_counters(client, args.interface, loss, feedback, received)),
        asyncio.create_task(_frames(client, args.publisher, received)),
    ]
    try:
        await run_until_quit(*tasks)
    finally:
        await client.leave()
        emit("closed", reason=client.close_reason)


async def _messages(client: SfuClient) -> None:
    while True:
        message = await client.events.get()
        if message.type not in NEGOTIATION:
            emit("msg", data=dict(message.data))


async def _counters(
    client: SfuClient,
    interface: str | None,
    loss: ReceiveLoss,
    feedback: SentFeedback,
    tapped: Received,
) -> None:
    while True:
        lag = await loop_lag(LAG_PERIOD, round(REPORT_INTERVAL / LAG_PERIOD))
        received = packets = lost = 0
        for stats in (await client.pc.getStats()).values():
            if stats.type == "transport":
                received += stats.bytesReceived
                packets += stats.packetsReceived
            elif stats.type == "inbound-rtp" and stats.kind == "video":
                lost += stats.packetsLost
        videos = [r.playout for r in client.remote_tracks.values() if r.kind == "video"]
        playout = asdict(videos[0]) if videos and videos[0] is not None else None
        emit(
            "rx", bytes=received, packets=packets, lost=lost,
            link=_link_bytes(interface), dropped=loss.dropped, lag=round(lag, 4),
            nacks=feedback.nacks, plis=feedback.plis, firs=feedback.firs, rtx=tapped.rtx,
            playout=playout,
        )  # fmt: skip


class Received:
    """What the RTP tap saw beyond keyframes: retransmissions (payload types that the remote
    description maps to ``rtx``, with more than the 2-byte original sequence number: padding-only
    probes on the RTX stream are not retransmissions)."""

    def __init__(self) -> None:
        self.rtx_types: frozenset[int] = frozenset()
        self.rtx = 0

    def learn(self, sdp: str) -> None:
        self.rtx_types = frozenset(int(pt) for pt in RTX_MAP.findall(sdp))

    def on_rtp(self, packet: bytes, arrival: float) -> None:
        with contextlib.suppress(ValueError):
            start, end = payload_bounds(packet)
            if packet[1] & 0x7F in self.rtx_types and end - start > 2:
                self.rtx += 1
            size = keyframe_size(packet, start, end)
            if size is not None:
                emit("keyframe", w=size[0], h=size[1])


async def _frames(client: SfuClient, publisher: str, received: Received) -> None:
    remote = await client.wait_for_track(publisher, "video", TRACK_TIMEOUT)
    emit("track", trackId=remote.track_id)
    description = client.pc.remoteDescription
    received.learn(description.sdp if description is not None else "")
    tap_rtp(client.pc.getTransceivers()[0].receiver.transport, received.on_rtp)
    while True:
        frame = await remote.track.recv()
        if isinstance(frame, av.VideoFrame):
            emit("frame", w=frame.width, h=frame.height)


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
    parser.add_argument("--playout", choices=("on", "off"), default="on", help="playout delay")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
