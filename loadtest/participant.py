"""One load participant: an :class:`~sfu_client.SfuClient` that sends pre-encoded media and
counts what it receives at the RTP level (see ``loadtest.wire``) instead of decoding it.

With simulcast its video goes out as pre-encoded rid layers, and it may ask for a layer of the
video it receives (``loadtest.simulcast``); received VP8 keyframes tell which layer arrives.

All times are ``time.perf_counter()`` values of this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import MediaStreamTrack

from loadtest import wire
from loadtest.media import ClipTrack, EncodedClip
from loadtest.simulcast import LayerPlan
from loadtest.stats import LargestSdp, LatencyBook, ReceivedStream, vp8_descriptor_size
from sfu.rtp.header import payload_bounds
from sfu.rtp.vp8 import keyframe_size
from sfu_client import SfuClient
from sfu_client.simulcast_media import PreEncodedLayers

#: A stream not yet matched to a remote track is looked up again at most this often (seconds).
RESOLVE_INTERVAL = 0.1
LEAVE_TIMEOUT = 5.0


@dataclass
class Shared:
    """What every load participant of a run shares."""

    urls: Sequence[str]  # the servers; a participant joins through ``urls[node]``
    video: EncodedClip | None
    audio: EncodedClip | None
    request_timeout: float = 10.0
    #: simulcast: one clip per layer, by rid (then ``video`` is not sent)
    layers: Mapping[str, EncodedClip] | None = None
    book: LatencyBook = field(default_factory=LatencyBook)
    #: negotiate transport-cc and send feedback on what arrives, as browsers do
    transport_cc: bool = True
    by_participant_id: dict[str, LoadParticipant] = field(default_factory=dict)


class LoadParticipant:
    def __init__(
        self,
        shared: Shared,
        room: str,
        name: str,
        publishes: bool,
        layer_plan: LayerPlan | None = None,
        node: int = 0,
    ) -> None:
        self.shared = shared
        self.node = node  # the index of the server it joins through, in ``shared.urls``
        self.room = room
        self.name = name
        self.publishes = publishes
        #: the ``maxLayer`` it asks for the video it receives (None: asks nothing, the best)
        self.layer_plan = layer_plan
        #: (time, track id, maxLayer) of every ``setTrackSettings`` it sent
        self.layer_requests: list[tuple[float, str, int]] = []
        self.state = "waiting"  # joining, joined, connected, failed, left
        self.error: str | None = None
        self.participant_id: str | None = None
        self.join_started: float | None = None
        self.joined_at: float | None = None
        self.connected_at: float | None = None
        self.first_video_sent_at: float | None = None
        self.rx_padding = 0  # padding-only packets (bandwidth probes): not media, not counted
        self.client: SfuClient | None = None
        self.streams: dict[int, ReceivedStream] = {}  # by SSRC
        self.rx_packets = 0
        self.rx_bytes = 0
        self.tx_packets = 0
        self.tx_bytes = 0
        #: latency samples (seconds) since the sampler last took them
        self.latencies: array[float] = array("d")
        #: the server's offers and answers, and this client's (see :meth:`_record_sent_sdp`)
        self.sdp_received = LargestSdp()
        self.sdp_sent = LargestSdp()
        self.track_ids: list[str] = []  # what it publishes, as the server named the tracks
        self._tracks: list[ClipTrack] = []
        self._layers: PreEncodedLayers | None = None
        self._sent_kinds: dict[int, str] = {}
        self._mids: dict[int, str] = {}
        self._remote_sdp: str | None = None
        self._next_resolve = 0.0

    @property
    def join_seconds(self) -> float | None:
        if self.joined_at is None or self.join_started is None:
            return None
        return self.joined_at - self.join_started

    @property
    def connect_seconds(self) -> float | None:
        if self.connected_at is None or self.join_started is None:
            return None
        return self.connected_at - self.join_started

    # --- lifecycle ---

    async def run(self, stop: asyncio.Event) -> None:
        """Join, publish, stay until ``stop`` is set, leave. Never raises."""
        chooser: asyncio.Task[None] | None = None
        try:
            await self._join()
            if self.layer_plan is not None and self.client is not None:
                chooser = asyncio.create_task(self._choose_layers(self.client, self.layer_plan))
            await stop.wait()
        except Exception as exc:
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if chooser is not None:
                chooser.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await chooser
            await self._leave()

    async def _join(self) -> None:
        self.state = "joining"
        self.join_started = time.perf_counter()
        client = self.client = await SfuClient.open(
            self.shared.urls[self.node],
            request_timeout=self.shared.request_timeout,
            transport_cc=self.shared.transport_cc,
        )
        self._record_sent_sdp(client)
        wire.install(client.pc, self._on_rtp_received, self._on_rtp_sent, self._on_keyframe_request)
        client.pc.on("connectionstatechange", self._on_connection_state)
        await client.join(self.room, self.name)
        self.joined_at = time.perf_counter()
        self.participant_id = client.participant_id
        if self.participant_id is not None:
            self.shared.by_participant_id[self.participant_id] = self
        self.state = "joined"
        if self.publishes:
            layers = self.shared.layers
            video = self.shared.video if layers is None else None
            self._tracks = [ClipTrack(c) for c in (video, self.shared.audio) if c]
            pairs: list[tuple[MediaStreamTrack, str]] = [
                (t, "camera" if t.kind == "video" else "microphone") for t in self._tracks
            ]
            local = await client.publish_many(pairs) if pairs else []
            if layers is not None:
                self._layers = PreEncodedLayers(layers)
                local.append(await client.publish_simulcast(self._layers, "camera"))
            self.track_ids = [t.track_id for t in local]
            self._sent_kinds = self._sender_kinds(client)

    async def _choose_layers(self, client: SfuClient, plan: LayerPlan) -> None:
        """Ask for the plan's layer of every video track as soon as the server offers it, and
        every ``plan.every`` seconds for the next layer of all of them."""
        asked: set[str] = set()
        step = 0
        every = plan.every
        next_step = time.perf_counter() + every if every else math.inf

        def video() -> set[str]:
            return {
                t.track_id for t in client.remote_tracks.values() if t.kind == "video" and t.active
            }

        while not client.closed:
            wait = min(5.0, max(0.0, next_step - time.perf_counter()))
            with contextlib.suppress(TimeoutError):
                await client.wait_until(lambda: bool(video() - asked), timeout=wait)
            if every and time.perf_counter() >= next_step:
                step += 1
                next_step += every
                await self._ask_layer(client, sorted(video() & asked), plan.layer(step))
            fresh = video() - asked
            asked.update(fresh)
            await self._ask_layer(client, sorted(fresh), plan.layer(step))

    async def _ask_layer(self, client: SfuClient, track_ids: list[str], layer: int) -> None:
        if track_ids:
            now = time.perf_counter()
            self.layer_requests.extend((now, track_id, layer) for track_id in track_ids)
            await client.set_track_settings(track_ids, max_layer=layer)

    @staticmethod
    def _sender_kinds(client: SfuClient) -> dict[int, str]:
        """SSRC -> kind of what it sends: aiortc's senders and the simulcast layers."""
        kinds = wire.sender_kinds(client.pc)
        for local in client.local_tracks.values():
            if local.simulcast is not None:
                kinds.update({layer.ssrc: "video" for layer in local.simulcast.layers.values()})
        return kinds

    def _on_connection_state(self) -> None:
        client = self.client
        if client is not None and client.pc.connectionState == "connected":
            if self.connected_at is None:
                self.connected_at = time.perf_counter()
            if self.state == "joined":
                self.state = "connected"

    def _record_sent_sdp(self, client: SfuClient) -> None:
        """Note the SDP of every offer and answer this client sends."""
        send = client.send

        async def send_noting_sdp(message: Mapping[str, Any]) -> None:
            sdp = message.get("sdp")
            if isinstance(sdp, str):
                self.sdp_sent.note(sdp)
            await send(message)

        client.send = send_noting_sdp  # type: ignore[method-assign]

    async def _leave(self) -> None:
        for track in self._tracks:
            track.stop()
        if self._layers is not None:
            self._layers.stop()
        client = self.client
        if client is None:
            return
        for message in client.history:  # the server's offers and answers
            sdp = message.data.get("sdp")
            if isinstance(sdp, str):
                self.sdp_received.note(sdp)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.leave(), LEAVE_TIMEOUT)
        with contextlib.suppress(Exception):
            await client.close()
        if self.state != "failed":
            self.state = "left"

    # --- packets (called from the transport, per packet: keep them cheap) ---

    def _on_rtp_sent(self, data: bytes, now: float) -> None:
        if len(data) < 12:
            return
        ssrc = int.from_bytes(data[8:12], "big")
        kind = self._sent_kinds.get(ssrc)
        if kind is None:  # a retransmission (RTX), or sent before publishing returned
            client = self.client
            if client is not None:
                self._sent_kinds = self._sender_kinds(client)
            kind = self._sent_kinds.get(ssrc)
            if kind is None:
                return
        self.tx_packets += 1
        self.tx_bytes += len(data)
        if kind == "video" and self.first_video_sent_at is None:
            self.first_video_sent_at = now
        if self.participant_id is not None:
            with contextlib.suppress(ValueError, IndexError):
                start, end = payload_bounds(data)
                if kind == "video":  # VP8: a simulcast down-track rewrites the descriptor
                    start += vp8_descriptor_size(data, start)
                self.shared.book.sent(self.participant_id, hash(data[start:end]), now)

    def _on_rtp_received(self, data: bytes, now: float) -> None:
        if len(data) < 12:
            return
        if data[0] & 0x20:  # padding (RFC 3550 §5.1): the server's probes are padding only
            with contextlib.suppress(ValueError):
                start, end = payload_bounds(data)
                if start == end:
                    self.rx_padding += 1
                    return
        ssrc = int.from_bytes(data[8:12], "big")
        stream = self.streams.get(ssrc)
        if stream is None:
            stream = self.streams[ssrc] = ReceivedStream(now)
        if stream.publisher_id is None and now >= self._next_resolve:
            self._resolve(stream, ssrc, now)
        stream.on_packet((data[2] << 8) | data[3], data[1] >= 0x80, len(data), now)
        self.rx_packets += 1
        self.rx_bytes += len(data)
        kind = stream.kind
        try:
            start, end = payload_bounds(data)
            if kind != "audio":  # video, or not matched to a track yet
                skip = vp8_descriptor_size(data, start)
                # S=1, PID=0 (RFC 7741 §4.2) and the frame tag's P bit clear (RFC 6386 §9.1):
                # this packet starts a keyframe, the only kind that says its size
                if data[start] & 0x1F == 0x10 and not data[start + skip] & 0x01:
                    size = keyframe_size(data, start, end)
                    if size is not None:
                        stream.on_keyframe(size[0], size[1], now)
                start += skip
        except (ValueError, IndexError):
            return
        publisher_id = stream.publisher_id
        if publisher_id is None:
            return
        sent = self.shared.book.sent_at(publisher_id, hash(data[start:end]))
        if sent is not None:
            self.latencies.append(now - sent)

    def _resolve(self, stream: ReceivedStream, ssrc: int, now: float) -> None:
        """Which remote track an SSRC carries: SSRC -> mid (server SDP) -> track (its map)."""
        self._next_resolve = now + RESOLVE_INTERVAL
        client = self.client
        if client is None:
            return
        remote: Any = client.pc.remoteDescription
        if remote is not None and remote.sdp is not self._remote_sdp:
            self._remote_sdp = remote.sdp
            self._mids = wire.ssrc_mids(remote.sdp)
        mid = self._mids.get(ssrc)
        for track in client.remote_tracks.values():
            if track.mid == mid:
                stream.kind = track.kind
                stream.publisher_id = track.participant_id
                stream.track_id = track.track_id
                return

    def _on_keyframe_request(self) -> None:
        for track in self._tracks:
            track.request_keyframe()
