"""The benchmark's load: publishers or subscribers in one child process of the orchestrator.

    python -m benchmarks.peers publisher --server aiosfu --url ws://127.0.0.1:PORT/ws --rooms 1
    python -m benchmarks.peers subscriber --server janus --url ws://127.0.0.1:8188 \\
        --feeds '{"0": 4711}' --subscribers 16

One publisher per room sends pre-generated VP8-shaped packets (benchmarks/packets.py) through
:class:`benchmarks.wire.RawSender`, paced at ``--rate`` packets/s; subscribers only record each
packet's send time (from its trailer) and arrival time. With ``--simulcast RIDS`` publishers send
three rid layers (benchmarks/simulcast_peers.py) and each subscriber asks for one. Subscribers
negotiate transport-cc and send feedback every 50 ms, as browsers do (``--transport-cc off``: not,
so that the forwarder's cost of numbering and matching shows; ``shadow``: not either, but the
subscribers keep the same per-packet bookkeeping, so the load costs what it does with feedback
and, on a shared machine, leaves the forwarder the same CPU). The orchestrator
(benchmarks/forwarding.py) reads JSON events on stdout (``ready``, ``report``) and writes JSON
commands on stdin (``{"cmd": "report", "t0": NS, "t1": NS}``, ``{"cmd": "stop"}``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import uvloop
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcdtlstransport import RTCDtlsTransport

from benchmarks.cases import subscriber_layer
from benchmarks.janus import ADMIN_KEY, JanusSession
from benchmarks.packets import MAGIC, TRAILER, PacketSource, Shape
from benchmarks.wire import (
    OnPacket,
    RawReceiver,
    RawSender,
    dtls_transport,
    negotiated_payload_type,
    sender_ssrc,
    wait_connected,
)
from sfu.media.aiortc_bridge import (
    accept_transport_cc,
    send_srtp,
    set_ice_host_addresses,
)
from sfu_client import SfuClient
from sfu_client.transport_cc import TransportCcFeedback

CONNECT_TIMEOUT = 30.0
PACING_TICK = 0.001  # uvloop's timers have millisecond resolution
CONNECT_CONCURRENCY = 8
#: seconds a simulcast subscriber must have got only its layer before the window may start
LAYER_SETTLED = 1.5
JANUS_ROOM_BASE = 7000
Closer = Callable[[], Awaitable[None]]


def emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


def room_name(server: str, index: int) -> str:
    return str(JANUS_ROOM_BASE + index) if server == "janus" else f"bench-{index}"


class SilentVideoTrack(MediaStreamTrack):
    """A video track that never yields a frame: aiortc's sender neither encodes nor sends."""

    kind = "video"

    async def recv(self) -> Any:
        await asyncio.get_running_loop().create_future()


def new_peer_connection() -> RTCPeerConnection:
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


# --- publishers ---


@dataclass
class Publisher:
    room: str
    feed: str  # what subscribers name to get this stream (participant id, Janus feed id)
    source: PacketSource
    sender: RawSender
    close: Closer
    sends: array[int] = field(default_factory=lambda: array("q"))

    def send(self, index: int) -> None:
        now = time.monotonic_ns()
        self.sender.send(self.source.packet(index, now))
        self.sends.append(now)


async def connect_publisher(
    args: argparse.Namespace, room: str, janus: JanusSession | None
) -> Publisher:
    track = SilentVideoTrack()
    close: Closer
    if janus is None:
        client = await SfuClient.connect(args.url, room, "publisher", request_timeout=20.0)
        local = await client.publish(track, "camera")
        transceiver, feed, close = local.transceiver, str(client.participant_id), client.close
    else:
        handle = await janus.attach()
        room_id = int(room)
        await janus.message(
            handle,
            {
                "request": "create",
                "room": room_id,
                "admin_key": ADMIN_KEY,
                "publishers": 4,
                "videocodec": "vp8",
                "is_private": True,
            },
        )
        joined, _ = await janus.message(
            handle, {"request": "join", "ptype": "publisher", "room": room_id, "display": "pub"}
        )
        pc = new_peer_connection()
        transceiver = pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "sdp": pc.localDescription.sdp}
        _, answer = await janus.message(handle, {"request": "publish"}, offer)
        if answer is None:
            raise RuntimeError("Janus answered publish without SDP")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await janus.trickle_done(handle)
        feed, close = str(joined["id"]), pc.close
    dtls: RTCDtlsTransport = transceiver.sender.transport
    await wait_connected(dtls, CONNECT_TIMEOUT)
    shape = Shape(rate=args.rate, fps=args.fps, payload_size=args.payload)
    source = PacketSource(shape, sender_ssrc(transceiver), negotiated_payload_type(transceiver))
    return Publisher(room, feed, source, RawSender(dtls), close)


async def pace(publishers: list[Publisher], rate: int, started_ns: int) -> None:
    """Packet ``i`` of every publisher is due at ``started + i / rate``; send what is due."""
    index = 0
    while True:
        due = (time.monotonic_ns() - started_ns) * rate // 1_000_000_000 + 1
        while index < due:
            for publisher in publishers:
                publisher.send(index)
            index += 1
        await asyncio.sleep(PACING_TICK)


def publisher_report(
    publishers: list[Publisher], rate: int, started_ns: int, t0: int, t1: int
) -> dict[str, Any]:
    sent: dict[str, int] = {}
    lags: list[Any] = []
    for p in publishers:
        sends = np.frombuffer(p.sends, dtype=np.int64)
        in_window = (sends >= t0) & (sends < t1)
        sent[p.room] = int(in_window.sum())
        scheduled = started_ns + np.arange(len(sends), dtype=np.int64) * 1_000_000_000 // rate
        lags.append((sends - scheduled)[in_window])
    lag = np.concatenate(lags) / 1e3 if lags else np.zeros(1)
    return {
        "sent": sent,
        "send_lag_us": {
            "p50": float(np.percentile(lag, 50)),
            "p99": float(np.percentile(lag, 99)),
            "max": float(lag.max(initial=0.0)),
        },
    }


async def run_publishers(args: argparse.Namespace, commands: asyncio.StreamReader) -> None:
    janus = await JanusSession.connect(args.url) if args.server == "janus" else None
    publishers = [
        await connect_publisher(args, room_name(args.server, i), janus) for i in range(args.rooms)
    ]
    started_ns = time.monotonic_ns()
    pacing = asyncio.create_task(pace(publishers, args.rate, started_ns))
    emit("ready", feeds={p.room: p.feed for p in publishers})

    def report(t0: int, t1: int) -> dict[str, Any]:
        return publisher_report(publishers, args.rate, started_ns, t0, t1)

    try:
        await serve_commands(commands, report, pacing)
    finally:
        pacing.cancel()
        await close_all([p.close for p in publishers], janus)


# --- subscribers ---


class Recorder:
    """What one subscriber received: each packet's send time and arrival time (ns)."""

    __slots__ = ("arrivals", "foreign", "sends")

    def __init__(self) -> None:
        self.sends: array[int] = array("q")
        self.arrivals: array[int] = array("q")
        self.foreign = 0

    def on_packet(self, packet: bytes, arrival_ns: int) -> None:
        if len(packet) >= 12 + TRAILER.size:
            magic, sent, _ = TRAILER.unpack_from(packet, len(packet) - TRAILER.size)
            if magic == MAGIC:
                self.sends.append(sent)
                self.arrivals.append(arrival_ns)
                return
        self.foreign += 1


class LayerRecorder(Recorder):
    """A simulcast subscriber's recorder: also the layer of each packet (the top byte of the
    trailer's index, ``simulcast_peers``) and which layers arrived at all."""

    __slots__ = ("layers", "run_layer", "run_since", "seen")

    def __init__(self) -> None:
        super().__init__()
        self.layers: array[int] = array("B")
        self.seen = bytearray(256)
        #: the layer of the last packet, and the arrival (ns) of the first of its current run
        self.run_layer = -1
        self.run_since = 0

    def on_packet(self, packet: bytes, arrival_ns: int) -> None:
        if len(packet) >= 12 + TRAILER.size:
            magic, sent, index = TRAILER.unpack_from(packet, len(packet) - TRAILER.size)
            if magic == MAGIC:
                self.sends.append(sent)
                self.arrivals.append(arrival_ns)
                layer = index >> 24
                self.layers.append(layer)
                self.seen[layer] = 1
                if layer != self.run_layer:
                    self.run_layer, self.run_since = layer, arrival_ns
                return
        self.foreign += 1


@dataclass
class Subscriber:
    room: str
    recorder: Recorder
    receiver: RawReceiver
    close: Closer
    joined_ns: int
    layer: int | None = None  # simulcast: the layer asked for (0 the smallest)
    feedback: TransportCcFeedback | None = None

    def has_media(self) -> bool:
        """Got a packet — or, when it asked for a layer, has got only that layer for
        :data:`LAYER_SETTLED` (aiosfu may start a subscriber on its layer, take it down on the
        first bandwidth estimate and bring it back up as probes raise it: a window taken before
        that would count the detour)."""
        recorder = self.recorder
        if self.layer is not None and isinstance(recorder, LayerRecorder):
            settled = time.monotonic_ns() - recorder.run_since >= LAYER_SETTLED * 1e9
            return recorder.run_layer == self.layer and settled
        return bool(recorder.arrivals)


async def hook_when_ready(hook: Callable[[], bool]) -> None:
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while not hook():
        if time.monotonic() > deadline:
            raise TimeoutError("ICE never created its sockets")
        await asyncio.sleep(0.005)


def feeding(recorder: Recorder, feedback: TransportCcFeedback | None) -> OnPacket:
    """The raw receiver's callback: the recorder's, and the feedback's first when there is one
    (the raw receiver bypasses aiortc's receive path, where the client taps packets itself)."""
    if feedback is None:
        return recorder.on_packet
    on_rtp, record = feedback.on_rtp, recorder.on_packet

    def on_packet(packet: bytes, arrival_ns: int) -> None:
        on_rtp(packet, arrival_ns * 1e-9)
        record(packet, arrival_ns)

    return on_packet


class ShadowFeedback(TransportCcFeedback):
    """The bookkeeping of transport-cc feedback without the extension or the sending: each
    packet's RTP sequence number stands in for the transport-wide one, and the messages built
    every 50 ms are dropped (counted as unsent, not sent)."""

    def __init__(self) -> None:
        super().__init__(self._drop, 0)

    @staticmethod
    async def _drop(message: bytes) -> bool:
        return False

    def on_rtp(self, packet: bytes, arrival: float) -> None:
        builder = self.builder
        builder.record(int.from_bytes(packet[2:4], "big"), arrival)
        if not builder.media_ssrc and len(packet) >= 12:
            builder.media_ssrc = int.from_bytes(packet[8:12], "big")


def janus_feedback(pc: RTCPeerConnection, on: bool) -> TransportCcFeedback | None:
    """Transport-cc feedback on a Janus subscriber's connection, if Janus offered it (call after
    applying its offer, before answering)."""
    ext_id = accept_transport_cc(pc) if on else 0
    if not ext_id:
        return None
    dtls = dtls_transport(pc)
    return TransportCcFeedback(lambda data: send_srtp(dtls, data), ext_id)


async def connect_subscriber(
    args: argparse.Namespace,
    room: str,
    feed: str,
    name: str,
    janus: JanusSession | None,
    layer: int | None = None,
) -> Subscriber:
    """``layer``: ask for this simulcast layer (aiosfu: ``setTrackSettings`` ``maxLayer``;
    Janus: ``configure`` ``substream``, the same layer with the rid order Janus is offered)."""
    recorder = Recorder() if layer is None else LayerRecorder()
    joined_ns = time.monotonic_ns()
    transport_cc = args.transport_cc == "on"
    if janus is None:
        client = await SfuClient.connect(
            args.url, room, name, request_timeout=20.0, transport_cc=transport_cc
        )
        remote = await client.wait_for_track(feed, "video", CONNECT_TIMEOUT)
        feedback = client.transport_cc_feedback
        shadow = ShadowFeedback() if args.transport_cc == "shadow" else None
        if shadow is not None:
            feedback = shadow
            shadow.start()

        async def leave() -> None:
            if shadow is not None:
                await shadow.stop()
            await client.close()

        receiver = RawReceiver(dtls_transport(client.pc), feeding(recorder, feedback))
        await hook_when_ready(receiver.hook_sockets)
        if layer is not None:
            await client.set_track_settings([remote.track_id], max_layer=layer)
        return Subscriber(room, recorder, receiver, leave, joined_ns, layer, feedback)
    handle = await janus.attach()
    join = {"request": "join", "ptype": "subscriber", "room": int(room)}
    _, offer = await janus.message(handle, {**join, "streams": [{"feed": int(feed)}]})
    if offer is None:
        raise RuntimeError("Janus sent no offer to a subscriber")
    pc = new_peer_connection()
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    feedback = janus_feedback(pc, transport_cc)
    receiver = RawReceiver(dtls_transport(pc), feeding(recorder, feedback))
    await pc.setLocalDescription(await pc.createAnswer())
    await hook_when_ready(receiver.hook_sockets)
    answer = {"type": "answer", "sdp": pc.localDescription.sdp}
    await janus.message(handle, {"request": "start"}, answer)
    await janus.trickle_done(handle)
    if layer is not None:
        await janus.message(handle, {"request": "configure", "substream": layer})
    if feedback is not None:
        feedback.start()

    async def close() -> None:
        if feedback is not None:
            await feedback.stop()
        await pc.close()

    return Subscriber(room, recorder, receiver, close, joined_ns, layer, feedback)


def subscriber_report(
    subscribers: list[Subscriber], t0: int, t1: int, latency_file: Path
) -> dict[str, Any]:
    received: dict[str, int] = {}
    per_subscriber: list[int] = []
    latencies: list[Any] = []
    foreign = rejected = outside = feedback = 0
    layers: list[dict[str, Any]] = []
    for s in subscribers:
        sends = np.frombuffer(s.recorder.sends, dtype=np.int64)
        arrivals = np.frombuffer(s.recorder.arrivals, dtype=np.int64)[: len(sends)]
        sends = sends[: len(arrivals)]
        in_window = (sends >= t0) & (sends < t1)
        count = int(in_window.sum())
        received[s.room] = received.get(s.room, 0) + count
        per_subscriber.append(count)
        latencies.append(((arrivals - sends)[in_window] / 1e3).astype(np.float32))
        foreign += s.recorder.foreign
        rejected += s.receiver.rejected
        outside += len(sends) - count
        feedback += s.feedback.sent if s.feedback is not None else 0
        if s.layer is not None and isinstance(s.recorder, LayerRecorder):
            got = np.frombuffer(s.recorder.layers, dtype=np.uint8)[: len(sends)][in_window]
            by_layer = np.bincount(got, minlength=3).tolist()
            layers.append({"room": s.room, "layer": s.layer, "by_layer": by_layer})
    np.save(latency_file, np.concatenate(latencies) if latencies else np.zeros(0, np.float32))
    return {
        "received": received,
        "per_subscriber_min": min(per_subscriber, default=0),
        "per_subscriber_max": max(per_subscriber, default=0),
        "foreign_packets": foreign,
        "srtp_rejected": rejected,
        "outside_window": outside,
        "latency_file": str(latency_file),
        "layers": layers,
        "transport_cc_feedback": feedback,  # messages sent, since connecting
    }


async def run_subscribers(args: argparse.Namespace, commands: asyncio.StreamReader) -> None:
    feeds: dict[str, str] = json.loads(args.feeds)
    janus = await JanusSession.connect(args.url) if args.server == "janus" else None
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    subscribers: list[Subscriber] = []

    async def one(room: str, feed: str, j: int) -> None:
        layer = subscriber_layer(j) if args.simulcast else None
        async with gate:
            subscriber = await connect_subscriber(args, room, feed, f"sub{j}", janus, layer)
            subscribers.append(subscriber)

    try:
        await asyncio.gather(
            *(one(room, feed, j) for room, feed in feeds.items() for j in range(args.subscribers))
        )
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while not all(s.has_media() for s in subscribers):
            if time.monotonic() > deadline:
                waiting = sum(1 for s in subscribers if not s.has_media())
                what = "got only their layer for a while" if args.simulcast else "received anything"
                raise TimeoutError(f"{waiting} subscribers never {what}")
            await asyncio.sleep(0.01)
        first_ms = [(s.recorder.arrivals[0] - s.joined_ns) / 1e6 for s in subscribers]
        emit("ready", first_packet_ms=max(first_ms))

        def report(t0: int, t1: int) -> dict[str, Any]:
            return subscriber_report(subscribers, t0, t1, Path(args.latency_file))

        await serve_commands(commands, report, None)
    finally:
        await close_all([s.close for s in subscribers], janus)


# --- plumbing ---


async def serve_commands(
    commands: asyncio.StreamReader,
    report: Callable[[int, int], dict[str, Any]],
    worker: asyncio.Task[None] | None,
) -> None:
    while True:
        line = await commands.readline()
        if worker is not None and worker.done():
            worker.result()  # the pacing loop failed: raise its error
        if not line:
            return
        command = json.loads(line)
        if command["cmd"] == "stop":
            return
        if command["cmd"] == "report":
            emit("report", **report(int(command["t0"]), int(command["t1"])))


async def close_all(closers: list[Closer], janus: JanusSession | None) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5.0):
            await asyncio.gather(*(c() for c in closers), return_exceptions=True)
            if janus is not None:
                await janus.close()


async def main(args: argparse.Namespace) -> None:
    set_ice_host_addresses([args.ice_host])
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    if args.role == "publisher" and args.simulcast:
        from benchmarks import simulcast_peers  # it imports this module

        await simulcast_peers.run_publishers(args, commands)
    elif args.role == "publisher":
        await run_publishers(args, commands)
    else:
        await run_subscribers(args, commands)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("publisher", "subscriber"))
    parser.add_argument("--server", choices=("aiosfu", "janus"), required=True)
    parser.add_argument("--url", required=True, help="signaling WebSocket URL")
    parser.add_argument("--ice-host", default="127.0.0.1", help="the only ICE host candidate")
    parser.add_argument("--rooms", type=int, default=1, help="publishers (one per room)")
    parser.add_argument("--rate", type=int, default=2000, help="packets/s per publisher")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--payload", type=int, default=1100, help="RTP payload bytes")
    parser.add_argument("--feeds", default="{}", help="JSON {room: feed} from the publisher")
    parser.add_argument("--subscribers", type=int, default=1, help="subscribers per room")
    parser.add_argument(
        "--simulcast",
        default="",
        metavar="RIDS",
        help="publish three simulcast layers, offering these rids in this order (q,h,f: small "
        "to large); subscribers ask for a layer each (benchmarks/simulcast_peers.py)",
    )
    parser.add_argument("--latency-file", default=f"/tmp/latency-{os.getpid()}.npy")
    parser.add_argument(
        "--transport-cc",
        choices=("on", "off", "shadow"),
        default="on",
        help="subscribers negotiate transport-cc and send feedback every 50 ms (shadow: they "
        "negotiate none but do the same per-packet bookkeeping, sending nothing)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    uvloop.run(main(parse_args()))
