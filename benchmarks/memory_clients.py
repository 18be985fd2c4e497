"""The memory benchmark's participants: many cheap aiortc clients of aiosfu in one process.

    python -m benchmarks.memory_clients --url ws://127.0.0.1:PORT/ws --ice-host 127.0.0.1

Driven by benchmarks/memory.py through JSON lines: commands on stdin, events on stdout.

- ``{"cmd": "join", "rooms": [["mem-0", 4], ...]}``: every participant of those rooms opens the
  signaling WebSocket, joins, publishes a microphone and a camera track in one offer, and
  connects (ICE + DTLS); then each waits until it carries every other participant's tracks.
  Answers ``{"event": "joined", ...}`` with how many connected and what failed. ``"concurrency":
  N`` (default :data:`CONNECT_CONCURRENCY`) is how many join at once (1: one after another).
  ``"autoSubscribe": false``: they join receiving nothing (each waits until it knows of the
  others' tracks).
- ``{"cmd": "subscribe", "room": R, "publishers": K}``: everyone in R subscribes to the tracks
  of R's first K participants and waits until it carries them (benchmarks/downtracks.py).
- ``{"cmd": "leave", "rooms": [...], "concurrency": N}``: the participants of those rooms close
  their connections, N at a time (benchmarks/churn.py); answers ``{"event": "left", ...}``.
- ``{"cmd": "media", "rooms": ["mem-0", ...]}``: the publishers of those rooms start sending
  pre-generated packets: audio (``--audio-rate`` packets/s of ``--audio-payload`` bytes) and
  VP8-shaped video (benchmarks/packets.py), SRTP-protected straight onto the ICE socket
  (benchmarks/wire.py). Until then a participant publishes but sends no RTP.
- ``{"cmd": "report"}``: packets sent and received, connections up, this process's CPU.
- ``{"cmd": "stop"}``: close every connection and exit.

A participant is as cheap as aiortc allows: its tracks never produce a frame (no encoder), its
receivers are inert (no decoder thread per m-line; what arrives is taken off the socket,
decrypted and counted by :class:`benchmarks.wire.RawReceiver`) and it sends no NACKs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvloop
from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpTransceiver
from aiortc.rtcdtlstransport import RTCDtlsTransport

from benchmarks.packets import PacketSource, Shape
from benchmarks.peers import SilentVideoTrack, emit, hook_when_ready
from benchmarks.wire import (
    RawReceiver,
    RawSender,
    dtls_transport,
    negotiated_payload_type,
    sender_ssrc,
    wait_connected,
)
from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu_client import SfuClient

CONNECT_TIMEOUT = 60.0
SETTLE_TIMEOUT = 60.0
CONNECT_CONCURRENCY = 8
PACING_TICK = 0.005
AUDIO_CLOCK_RATE = 48_000
_RTP = struct.Struct("!BBHII")


class SilentAudioTrack(MediaStreamTrack):
    """An audio track that never yields a frame: aiortc's sender neither encodes nor sends."""

    kind = "audio"

    async def recv(self) -> Any:
        await asyncio.get_running_loop().create_future()


class InertReceiver(RTCRtpReceiver):
    """aiortc's receiver without its decoder thread and RTCP task (nothing reaches it anyway)."""

    async def receive(self, parameters: Any) -> None:
        return None

    async def stop(self) -> None:
        return None

    def _handle_disconnect(self) -> None:
        return None


def make_receivers_inert(client: SfuClient) -> None:
    """Every transceiver ``client.pc`` creates from now on gets an :class:`InertReceiver`."""
    pc: Any = client.pc
    create = pc._RTCPeerConnection__createTransceiver  # name-mangled; the instance attribute wins

    def create_inert(direction: str, kind: str, sender_track: Any = None) -> RTCRtpTransceiver:
        transceiver: RTCRtpTransceiver = create(direction, kind, sender_track)
        transceiver.receiver.__class__ = InertReceiver
        return transceiver

    pc._RTCPeerConnection__createTransceiver = create_inert


class AudioSource:
    """Opus-sized RTP packets, 20 ms apart (the server forwards audio without looking inside)."""

    def __init__(self, ssrc: int, payload_type: int, payload_size: int) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.payload = (bytes(range(7, 256, 3)) * (payload_size // 83 + 1))[:payload_size]

    def packet(self, index: int) -> bytes:
        timestamp = index * AUDIO_CLOCK_RATE // 50
        header = _RTP.pack(
            0x80, self.payload_type, index & 0xFFFF, timestamp & 0xFFFFFFFF, self.ssrc
        )
        return header + self.payload


@dataclass
class Media:
    """What one publisher sends once its room's media starts."""

    audio: AudioSource
    video: PacketSource
    sender: RawSender
    started_ns: int = 0
    audio_sent: int = 0
    video_sent: int = 0


@dataclass
class Participant:
    room: str
    name: str
    client: SfuClient | None = None
    dtls: RTCDtlsTransport | None = None
    receiver: RawReceiver | None = None
    media: Media | None = None
    error: str | None = None
    received: int = 0

    def on_packet(self, packet: bytes, arrival_ns: int) -> None:
        self.received += 1

    @property
    def connected(self) -> bool:
        return self.dtls is not None and self.dtls.state == "connected"


def _carries(client: SfuClient, tracks: set[str]) -> Callable[[], bool]:
    return lambda: tracks <= client.remote_tracks.keys()


class Clients:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.participants: list[Participant] = []
        self.sending: list[Participant] = []
        self.video_shape = Shape(
            rate=args.video_rate, fps=args.fps, payload_size=args.video_payload
        )
        self._pacing: asyncio.Task[None] | None = None

    async def join(
        self,
        rooms: list[tuple[str, int]],
        concurrency: int = CONNECT_CONCURRENCY,
        auto_subscribe: bool = True,
    ) -> dict[str, Any]:
        started = time.monotonic()
        first = len(self.participants)
        new = [Participant(room, f"p{first + i}") for i, room in enumerate(self._seats(rooms))]
        self.participants += new
        gate = asyncio.Semaphore(max(1, concurrency))
        await asyncio.gather(*(self._connect(p, gate, auto_subscribe) for p in new))
        # everyone in those rooms (who joined before too) must carry every other's tracks
        joined = {room for room, _ in rooms}
        present = [p for p in self.participants if p.room in joined and p.error is None]
        sizes = {room: sum(1 for p in present if p.room == room) for room in joined}
        await asyncio.gather(*(self._settle(p, sizes[p.room], auto_subscribe) for p in present))
        failed = [f"{p.room}/{p.name}: {p.error}" for p in new if p.error is not None]
        return {
            "participants": len(new),
            "connected": sum(1 for p in new if p.connected and p.error is None),
            "failed": failed[:20],
            "seconds": round(time.monotonic() - started, 2),
        }

    @staticmethod
    def _seats(rooms: list[tuple[str, int]]) -> list[str]:
        return [room for room, size in rooms for _ in range(size)]

    async def leave(self, rooms: list[str], concurrency: int) -> dict[str, Any]:
        """Close the participants of ``rooms``, ``concurrency`` at a time, and forget them."""
        started = time.monotonic()
        wanted = set(rooms)
        leaving = [p for p in self.participants if p.room in wanted]
        self.participants = [p for p in self.participants if p.room not in wanted]
        self.sending = [p for p in self.sending if p.room not in wanted]
        gate = asyncio.Semaphore(max(1, concurrency))

        async def close(p: Participant) -> None:
            async with gate:
                if p.client is not None:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(10.0):
                            await p.client.close()

        await asyncio.gather(*(close(p) for p in leaving))
        return {"participants": len(leaving), "seconds": round(time.monotonic() - started, 2)}

    async def subscribe(self, room: str, publishers: int) -> dict[str, Any]:
        """Everyone in ``room`` subscribes to the tracks of its first ``publishers`` participants
        (in joining order; not to its own), one participant after another, each waiting until it
        carries them: a burst of large renegotiations would measure the burst."""
        started = time.monotonic()
        present = [p for p in self.participants if p.room == room and p.client is not None]
        chosen = [p.client.participant_id for p in present[:publishers] if p.client is not None]
        tracks, failed = 0, []
        for p in present:
            client = p.client
            assert client is not None
            wanted = {
                track_id
                for pid in chosen
                if pid != client.participant_id and pid in client.participants
                for track_id in client.participants[pid].tracks
            }
            tracks += len(wanted)
            try:
                await client.subscribe(sorted(wanted))
                await client.wait_until(
                    _carries(client, wanted), SETTLE_TIMEOUT, f"for {len(wanted)} tracks"
                )
            except Exception as exc:
                failed.append(f"{p.name}: {type(exc).__name__}: {exc}")
        return {
            "participants": len(present),
            "tracks": tracks,
            "failed": failed[:20],
            "seconds": round(time.monotonic() - started, 2),
        }

    async def _connect(
        self, p: Participant, gate: asyncio.Semaphore, auto_subscribe: bool = True
    ) -> None:
        async with gate:
            try:
                client = p.client = await SfuClient.open(self.args.url, request_timeout=30.0)
                make_receivers_inert(client)
                await client.join(p.room, p.name, auto_subscribe=auto_subscribe)
                tracks: list[tuple[MediaStreamTrack, str]] = [
                    (SilentAudioTrack(), "microphone"),
                    (SilentVideoTrack(), "camera"),
                ]
                local = await client.publish_many(tracks)
                p.dtls = dtls_transport(client.pc)
                p.receiver = RawReceiver(p.dtls, p.on_packet)
                await hook_when_ready(p.receiver.hook_sockets)
                await wait_connected(p.dtls, CONNECT_TIMEOUT)
                audio, video = (t.transceiver for t in local)
                p.media = Media(
                    AudioSource(
                        sender_ssrc(audio),
                        negotiated_payload_type(audio, "OPUS"),
                        self.args.audio_payload,
                    ),
                    PacketSource(
                        self.video_shape, sender_ssrc(video), negotiated_payload_type(video)
                    ),
                    RawSender(p.dtls),
                )
            except Exception as exc:
                p.error = f"{type(exc).__name__}: {exc}"

    async def _settle(self, p: Participant, room_size: int, auto_subscribe: bool = True) -> None:
        """Wait until ``p`` carries the 2 tracks of each other participant of its room (without
        ``auto_subscribe``: until it knows of them)."""
        client = p.client
        assert client is not None
        expected = 2 * (room_size - 1)

        def settled() -> bool:
            if auto_subscribe:
                return len(client.remote_tracks) >= expected
            return sum(len(other.tracks) for other in client.participants.values()) >= expected

        try:
            await client.wait_until(
                settled,
                SETTLE_TIMEOUT,
                f"for {expected} remote tracks",
            )
        except Exception as exc:
            known = sorted(len(other.tracks) for other in client.participants.values())
            p.error = (
                f"{type(exc).__name__}: {exc} (carries {len(client.remote_tracks)}; knows "
                f"{len(known)} others publishing {known})"
            )

    def start_media(self, rooms: list[str]) -> int:
        wanted = set(rooms)
        now = time.monotonic_ns()
        fresh = [p for p in self.participants if p.room in wanted and p.media is not None]
        for index, p in enumerate(fresh):
            assert p.media is not None
            if p.media.started_ns == 0:
                # spread the publishers over one audio interval so they do not send in step
                p.media.started_ns = now + index * 20_000_000 // max(1, len(fresh))
                self.sending.append(p)
        if self._pacing is None:
            self._pacing = asyncio.create_task(self._pace())
        return len(self.sending)

    async def _pace(self) -> None:
        audio_rate, video_rate = self.args.audio_rate, self.video_shape.rate
        while True:
            now = time.monotonic_ns()
            for p in self.sending:
                media = p.media
                assert media is not None
                elapsed = now - media.started_ns
                if elapsed < 0:
                    continue
                due = elapsed * audio_rate // 1_000_000_000 + 1
                while media.audio_sent < due:
                    media.sender.send(media.audio.packet(media.audio_sent))
                    media.audio_sent += 1
                due = elapsed * video_rate // 1_000_000_000 + 1
                while media.video_sent < due:
                    media.sender.send(media.video.packet(media.video_sent, now))
                    media.video_sent += 1
            await asyncio.sleep(PACING_TICK)

    def report(self) -> dict[str, Any]:
        if self._pacing is not None and self._pacing.done():
            self._pacing.result()  # the pacing loop failed: raise its error
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "participants": len(self.participants),
            "connected": sum(1 for p in self.participants if p.connected),
            "sending": len(self.sending),
            "audio_sent": sum(p.media.audio_sent for p in self.participants if p.media),
            "video_sent": sum(p.media.video_sent for p in self.participants if p.media),
            "received": sum(p.received for p in self.participants),
            "srtp_rejected": sum(p.receiver.rejected for p in self.participants if p.receiver),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        }

    async def close(self) -> None:
        if self._pacing is not None:
            self._pacing.cancel()
        clients = [p.client for p in self.participants if p.client is not None]
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10.0):
                await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def main(args: argparse.Namespace) -> None:
    set_ice_host_addresses([args.ice_host])
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    clients = Clients(args)
    emit("ready", pid=os.getpid())
    try:
        while line := await commands.readline():
            command = json.loads(line)
            if command["cmd"] == "stop":
                break
            if command["cmd"] == "join":
                rooms = [(str(name), int(size)) for name, size in command["rooms"]]
                concurrency = int(command.get("concurrency", CONNECT_CONCURRENCY))
                auto = bool(command.get("autoSubscribe", True))
                emit("joined", **await clients.join(rooms, concurrency, auto))
            elif command["cmd"] == "subscribe":
                room, publishers = str(command["room"]), int(command["publishers"])
                emit("subscribed", **await clients.subscribe(room, publishers))
            elif command["cmd"] == "leave":
                rooms_left = [str(r) for r in command["rooms"]]
                concurrency = int(command.get("concurrency", CONNECT_CONCURRENCY))
                emit("left", **await clients.leave(rooms_left, concurrency))
            elif command["cmd"] == "media":
                emit("media", sending=clients.start_media([str(r) for r in command["rooms"]]))
            elif command["cmd"] == "report":
                emit("report", **clients.report())
    finally:
        await clients.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="signaling WebSocket URL")
    parser.add_argument("--ice-host", default="127.0.0.1", help="the only ICE host candidate")
    parser.add_argument("--audio-rate", type=int, default=50, help="audio packets/s")
    parser.add_argument("--audio-payload", type=int, default=80, help="audio payload bytes")
    parser.add_argument("--video-rate", type=int, default=30, help="video packets/s")
    parser.add_argument("--video-payload", type=int, default=1000, help="video payload bytes")
    parser.add_argument("--fps", type=int, default=15, help="video frames/s")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    uvloop.run(main(parse_args()))
