"""Simulcast publishers of the forwarding benchmark: three rid layers per publisher.

``python -m benchmarks.peers publisher --simulcast q,h,f ...`` runs these. Each publisher offers
rid simulcast on one VP8 m-line as Chromium does (RFC 8851 ``a=rid``, RFC 8853
``a=simulcast:send``, no ``a=ssrc``): the offer and the answer go through the Python client's
:class:`~sfu_client.simulcast.SimulcastPublisher` (with aiosfu through ``publish_simulcast``,
with Janus on a plain connection), which also reads the server's RTCP for the layers (PLI/FIR,
receiver reports acknowledging an SSRC, aiosfu's ``publisherLayers`` turning a layer off). Its
encoder is never fed: the packets are VP8-shaped and pre-generated as in ``packets.py`` (the
send-time trailer, whose index carries the layer in its top byte), each layer at its own rate
with its own SSRC, sequence numbers, timestamps and picture ids, a keyframe of the layer's size
every 30 frames or when asked, and the mid and rid header extensions (RFC 8852) until the
server acknowledged the SSRC, as libwebrtc sends them. They go out through
:class:`benchmarks.wire.RawSender`, paced like the single-stream publisher's.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import struct
import time
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiortc import RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport

from benchmarks.cases import SIMULCAST_LAYERS, layer_index, layer_rates
from benchmarks.janus import ADMIN_KEY, JanusSession
from benchmarks.packets import MAGIC, TRAILER, VIDEO_CLOCK_RATE
from benchmarks.peers import (
    CONNECT_TIMEOUT,
    PACING_TICK,
    Closer,
    SilentVideoTrack,
    close_all,
    emit,
    new_peer_connection,
    room_name,
    serve_commands,
)
from benchmarks.wire import RawSender, wait_connected
from sfu_client import SfuClient
from sfu_client.simulcast import SimulcastPublisher
from sfu_client.simulcast_layer import OutboundLayer, PacketWriter
from sfu_client.simulcast_media import LayerSize

KEYFRAME_INTERVAL = 30  # frames
LAYER_BITS = 24  # the trailer's index: layer << 24 | packet number
_DESCRIPTOR = struct.Struct("!BBH")  # X|S, I, M|picture id (RFC 7741)
_INTERFRAME_HEADER = bytes((0x11, 0x00, 0x00))


def keyframe_header(width: int, height: int) -> bytes:
    """RFC 6386 §9.1: frame tag (key frame, shown), start code, 14-bit width and height."""
    return bytes((0x10, 0x00, 0x00, 0x9D, 0x01, 0x2A)) + struct.pack("<HH", width, height)


class LayerStream:
    """One layer's packets: number ``i`` is due at ``started + i / rate``."""

    def __init__(
        self,
        layer: int,
        rate: int,
        fps: int,
        payload_size: int,
        out: OutboundLayer,
        writer: PacketWriter,
    ) -> None:
        spec = SIMULCAST_LAYERS[layer]
        self.layer, self.rate, self.fps = layer, rate, fps
        self.out, self.writer = out, writer
        filler = payload_size - _DESCRIPTOR.size - TRAILER.size
        key = keyframe_header(spec.width, spec.height)
        self._key_body = key + bytes(filler - len(key))
        self._inter_body = _INTERFRAME_HEADER + bytes(filler - len(_INTERFRAME_HEADER))
        self._body = (bytes(range(256)) * (filler // 256 + 1))[:filler]
        self._seq = random.getrandbits(15)
        self._timestamp = random.getrandbits(32)
        self._picture_id = random.getrandbits(15)
        self.due = 0  # packets due so far (sent, or skipped while the layer was off)
        self.numbers: array[int] = array("q")  # of the packets sent
        self.sends: array[int] = array("q")  # their send times (monotonic ns)

    def frame_of(self, index: int) -> int:
        return index * self.fps // self.rate

    def send_due(self, due: int, sender: RawSender) -> None:
        while self.due < due:
            index = self.due
            self.due += 1
            if not self.out.sending:  # aiosfu said nobody receives it (publisherLayers)
                continue
            now = time.monotonic_ns()
            sender.send(self.packet(index, now))
            self.numbers.append(index)
            self.sends.append(now)

    def packet(self, index: int, send_ns: int) -> bytes:
        frame = self.frame_of(index)
        first = index == 0 or self.frame_of(index - 1) != frame
        last = self.frame_of(index + 1) != frame
        if first:
            key = frame % KEYFRAME_INTERVAL == 0 or self.out.keyframe_wanted  # a PLI or FIR
            if key:
                self.out.keyframe_wanted = False
            body = self._key_body if key else self._inter_body
        else:
            body = self._body
        picture_id = 0x8000 | (self._picture_id + frame) & 0x7FFF
        descriptor = _DESCRIPTOR.pack(0x90 if first else 0x80, 0x80, picture_id)
        trailer = TRAILER.pack(MAGIC, send_ns, self.layer << LAYER_BITS | index & 0xFFFFFF)
        out, writer = self.out, self.writer
        extensions = writer.extensions(time.time(), out.rid, repaired=False, acked=out.acked)
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        timestamp = (self._timestamp + frame * VIDEO_CLOCK_RATE // self.fps) & 0xFFFFFFFF
        return writer.packet(
            int(last), seq, timestamp, out.ssrc, extensions, descriptor + body + trailer
        )


@dataclass
class SimulcastLoad:
    room: str
    feed: str
    streams: list[LayerStream]  # smallest layer first
    sender: RawSender
    close: Closer
    answered: list[str]  # the answer's rid and simulcast lines (Janus; aiortc drops them)


async def negotiate_janus(
    janus: JanusSession, room: str, publisher: SimulcastPublisher
) -> tuple[str, Closer, list[str]]:
    """Join a new VideoRoom room and publish ``publisher``'s m-line; returns the feed, the
    close function and the answer's rid and simulcast lines."""
    handle = await janus.attach()
    create = {"request": "create", "room": int(room), "admin_key": ADMIN_KEY, "publishers": 4}
    await janus.message(handle, {**create, "videocodec": "vp8", "is_private": True})
    join = {"request": "join", "ptype": "publisher", "room": int(room), "display": "pub"}
    joined, _ = await janus.message(handle, join)
    pc = new_peer_connection()
    publisher.attach(pc)
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"type": "offer", "sdp": publisher.offer(pc.localDescription.sdp)}
    _, answer = await janus.message(handle, {"request": "publish"}, offer)
    if answer is None:
        raise RuntimeError("Janus answered publish without SDP")
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    publisher.apply_answer(answer["sdp"])
    await janus.trickle_done(handle)
    lines = answer["sdp"].splitlines()
    return str(joined["id"]), pc.close, [x for x in lines if x.startswith(("a=rid", "a=simul"))]


async def connect_simulcast_publisher(
    args: argparse.Namespace, room: str, janus: JanusSession | None
) -> SimulcastLoad:
    rids = tuple(args.simulcast.split(","))
    layers = [LayerSize(rid) for rid in rids]
    track = SilentVideoTrack()  # never yields a frame: the publisher's encoders stay idle
    publisher: SimulcastPublisher
    close: Closer
    answered: list[str] = []
    if janus is None:
        client = await SfuClient.connect(args.url, room, "publisher", request_timeout=20.0)
        local = await client.publish_simulcast(track, "camera", layers=layers, fps=args.fps)
        assert local.simulcast is not None
        publisher, feed, close = local.simulcast, str(client.participant_id), client.close
    else:
        publisher = SimulcastPublisher(track, layers, fps=args.fps)
        feed, close, answered = await negotiate_janus(janus, room, publisher)
    negotiated = publisher.negotiated
    if negotiated is None or negotiated.rids != rids:
        accepted = negotiated.rids if negotiated else None
        raise RuntimeError(f"{args.server} accepted the layers {accepted} of {list(rids)}")
    assert publisher.transceiver is not None and publisher.mid is not None
    dtls: RTCDtlsTransport = publisher.transceiver.sender.transport
    await wait_connected(dtls, CONNECT_TIMEOUT)
    writer = PacketWriter(publisher.mid, negotiated, with_rid=True)
    streams = [
        LayerStream(layer_index(rid), rate, args.fps, args.payload, publisher.layers[rid], writer)
        for rid, rate in _rates(args, rids).items()
    ]
    streams.sort(key=lambda s: s.layer)
    return SimulcastLoad(room, feed, streams, RawSender(dtls), close, answered)


def _rates(args: argparse.Namespace, rids: tuple[str, ...]) -> dict[str, int]:
    rates = layer_rates(args.rate, args.fps)
    return {rid: rates[layer_index(rid)] for rid in rids}


async def pace(loads: list[SimulcastLoad], started_ns: int) -> None:
    while True:
        elapsed = time.monotonic_ns() - started_ns
        for load in loads:
            for stream in load.streams:
                stream.send_due(elapsed * stream.rate // 1_000_000_000 + 1, load.sender)
        await asyncio.sleep(PACING_TICK)


def publisher_report(
    loads: list[SimulcastLoad], started_ns: int, t0: int, t1: int
) -> dict[str, Any]:
    """Packets sent in ``[t0, t1)`` per room and per layer, and how late they left."""
    sent: dict[str, int] = {}
    by_layer: dict[str, list[int]] = {}
    lags: list[Any] = []
    for load in loads:
        counts = []
        for stream in load.streams:
            sends = np.frombuffer(stream.sends, dtype=np.int64)
            numbers = np.frombuffer(stream.numbers, dtype=np.int64)[: len(sends)]
            sends = sends[: len(numbers)]
            in_window = (sends >= t0) & (sends < t1)
            counts.append(int(in_window.sum()))
            scheduled = started_ns + numbers * 1_000_000_000 // stream.rate
            lags.append((sends - scheduled)[in_window])
        sent[load.room] = sum(counts)
        by_layer[load.room] = counts
    lag = np.concatenate(lags) / 1e3 if lags else np.zeros(1)
    return {
        "sent": sent,
        "sent_by_layer": by_layer,
        "send_lag_us": {
            "p50": float(np.percentile(lag, 50)) if lag.size else 0.0,
            "p99": float(np.percentile(lag, 99)) if lag.size else 0.0,
            "max": float(lag.max(initial=0.0)),
        },
    }


async def run_publishers(args: argparse.Namespace, commands: asyncio.StreamReader) -> None:
    janus = await JanusSession.connect(args.url) if args.server == "janus" else None
    loads = [
        await connect_simulcast_publisher(args, room_name(args.server, i), janus)
        for i in range(args.rooms)
    ]
    started_ns = time.monotonic_ns()
    pacing = asyncio.create_task(pace(loads, started_ns))
    rates = {SIMULCAST_LAYERS[s.layer].rid: s.rate for s in loads[0].streams}
    answered = {load.room: load.answered for load in loads}
    emit("ready", feeds={load.room: load.feed for load in loads}, rates=rates, answers=answered)

    def report(t0: int, t1: int) -> dict[str, Any]:
        return publisher_report(loads, started_ns, t0, t1)

    try:
        await serve_commands(commands, report, pacing)
    finally:
        pacing.cancel()
        await close_all([load.close for load in loads], janus)
