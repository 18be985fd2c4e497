"""Simulcast in /metrics: layer switches, keyframe requests by reason, down-track states and the
publisher layers turned off, as a subscriber's choices move its down-track between layers.

Two real participants of a real service, no network: the publisher's connection is fed RTP
directly (ingress routes each layer by its mid + rid header extensions), the subscriber's
down-track records what it would send, the keyframe timers are fired by hand on a fake clock.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from unittest.mock import patch

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sfu.api import Event, PublisherLayers, TrackInfo, TrackSettings
from sfu.counters import MediaTotals, layer_gauges
from sfu.media.downtrack import OutgoingStream
from sfu.media.layer_selector import UNWANTED_GRACE
from sfu.media.params import URI_MID, URI_RID, MediaParams
from sfu.media.receiver import TrackReceiver
from sfu.media.vp8_downtrack import Vp8DownTrack
from sfu.metrics import build_registry
from sfu.participant import Participant, Subscription
from sfu.rtp import rtcp
from sfu.rtp.header import build_extension_block
from sfu.service import Sfu

from .media_doubles import VP8, RecordingSink, subscriber_params

MID_EXT, RID_EXT = 1, 2
SSRCS = {"q": 0x100, "h": 0x200, "f": 0x300}
SIZES = {"q": (320, 180), "h": (640, 360), "f": (1280, 720)}


def layer_packet(rid: str, seq: int, keyframe: bool) -> bytes:
    """A VP8 packet of layer ``rid`` with the mid and rid extensions, as a browser sends it."""
    header = struct.pack("!BBHII", 0x90, 0x80 | VP8.payload_type, seq, seq * 3000, SSRCS[rid])
    block = build_extension_block([(MID_EXT, b"0"), (RID_EXT, rid.encode())])
    if keyframe:  # frame tag with P clear, start code, size (RFC 6386 §9.1)
        payload = b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", *SIZES[rid])
    else:
        payload = b"\x01\x00\x00"
    return header + block + b"\x10" + payload + b"\xaa" * 100


class Vp8Sink(RecordingSink):
    """Records the SSRC of each source packet a VP8 simulcast down-track sends on."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[int] = []

    def send_vp8(self, data: bytes, *rest: object) -> None:
        self.sources.append(struct.unpack_from("!I", data, 8)[0])


class Publisher:
    """Stands in for the publisher's transport: records the PLIs the server sends it."""

    connected = True
    packets_sent = bytes_sent = send_errors = 0
    pacer_counts = (0, 0)

    def __init__(self) -> None:
        self.plis: list[int] = []

    def send_rtcp(self, data: bytes) -> None:
        self.plis += [p.media_ssrc for p in rtcp.parse_compound(data) if isinstance(p, rtcp.Pli)]

    def forget_remote_ssrc(self, ssrc: int) -> None:
        pass


@dataclass
class Clock:
    """Monotonic time for the track, and the keyframe timers its connection would schedule."""

    now: float = 100.0
    timers: list[tuple[float, Callable[[], None]]] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.timers.append((self.now + delay, callback))

    def advance(self, to: float) -> None:
        """Move to ``to``, firing the timers due by then in order (they may schedule more)."""
        while due := [t for t in self.timers if t[0] <= to]:
            first = min(due, key=lambda t: t[0])
            self.timers.remove(first)
            self.now = first[0]
            first[1]()
        self.now = to


@dataclass
class Call:
    service: Sfu
    publisher: Participant
    subscriber: Participant
    track: TrackReceiver
    down_track: Vp8DownTrack
    sink: Vp8Sink
    clock: Clock
    transport: Publisher
    events: list[Event]
    seq: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SSRCS, 0))

    def send(self, rid: str, keyframe: bool = False) -> None:
        self.publisher.connection._on_rtp(
            layer_packet(rid, self.seq[rid], keyframe), self.clock.now
        )
        self.seq[rid] += 1

    def set(self, settings: TrackSettings) -> None:
        self.subscriber.track_settings[self.track.info.track_id] = settings
        self.subscriber.connection.choose_layers(self.clock.now)

    def state(self) -> str:
        gauges = layer_gauges([self.track]).down_tracks
        (state,) = [s for (kind, s), n in gauges.items() if n]
        return state

    def requests(self, rid: str) -> dict[str, int]:
        layer = self.track.layer(rid)
        assert layer is not None
        return {reason: n for reason, n in layer.keyframes.sent.items() if n}


@pytest.fixture
async def call() -> AsyncIterator[Call]:
    service = Sfu()
    events: list[Event] = []
    publisher, _ = await service.join("room", "pub", events.append)
    subscriber, _ = await service.join("room", "sub", lambda event: None)
    assert isinstance(publisher, Participant) and isinstance(subscriber, Participant)
    clock = Clock()
    transport = Publisher()
    connection = publisher.connection
    connection.transport = transport  # type: ignore[assignment]
    params = MediaParams(
        mid="0",
        kind="video",
        codecs=(VP8,),
        extensions={URI_MID: MID_EXT, URI_RID: RID_EXT},
        local_ssrc=1,
        local_rtx_ssrc=2,
        rids=("q", "h", "f"),
    )
    info = TrackInfo("TR_cam", publisher.participant_id, "video", "camera")
    track = TrackReceiver(info, params, connection, 0.5, connection.publisher_clock, clock=clock)
    publisher.published["0"] = track
    connection.add_receiver(track)
    sink = Vp8Sink()
    subscription = Subscription(None, VP8)
    subscription.stream = OutgoingStream(subscriber_params(), 500, 9000)
    down_track = Vp8DownTrack(track, subscription.stream, sink, clock)
    subscription.track, subscription.down_track = track, down_track
    subscriber.subscriptions.append(subscription)
    subscriber.connection.add_down_track(down_track)
    with patch.object(connection, "call_later", clock.call_later):
        yield Call(
            service, publisher, subscriber, track, down_track, sink, clock, transport, events
        )
    connection.transport = None
    await service.close()


def scrape(service: Sfu) -> dict[str, float]:
    text = generate_latest(build_registry(service, process=False)).decode()
    return {
        ",".join([s.name, *(f"{k}={v}" for k, v in sorted(s.labels.items()))]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_switches_requests_and_pauses_move_the_metrics(call: Call) -> None:
    clock, track, down_track = call.clock, call.track, call.down_track
    for rid in "qhf":  # every layer arrives, its size known from its keyframe
        call.send(rid, keyframe=True)
        call.send(rid)  # (a new stream's first packet is held until a second one follows)
    track.add_down_track(down_track)  # starts on the largest layer: f, asked for a keyframe
    assert down_track.target is track.layer("f")
    assert call.state() == "starting"
    assert call.requests("f") == {"start": 1}
    call.send("f")
    call.send("f", keyframe=True)
    assert call.state() == "forwarding" and down_track.layer is track.layer("f")

    call.publisher.connection.allocate_layers(clock.now)  # layers measured and ranked
    call.set(TrackSettings(max_layer=0))  # the smallest: q, switched to at its keyframe
    assert call.state() == "switching" and down_track.target is track.layer("q")
    assert call.requests("q") == {"start": 1}
    clock.advance(clock.now + 0.1)
    call.subscriber.connection._on_rtcp(
        rtcp.serialize([rtcp.Pli(sender_ssrc=9, media_ssrc=down_track.ssrc)])
    )
    assert call.requests("q") == {"start": 1}  # throttled: sent late, as the subscriber's
    clock.advance(clock.now + 1.0)
    assert call.requests("q") == {"start": 1, "subscriber": 1}
    clock.advance(clock.now + 1.0)  # still waiting: asked again
    assert call.requests("q") == {"start": 1, "subscriber": 1, "retry": 1}
    call.send("f")
    assert down_track.stream.layer_switches == 0
    call.send("q", keyframe=True)
    assert call.state() == "forwarding" and down_track.layer is track.layer("q")
    assert down_track.stream.layer_switches == 1
    assert call.sink.sources == [SSRCS["f"], SSRCS["f"], SSRCS["q"]]
    clock.advance(clock.now + 5.0)  # nobody waits: nothing more is asked
    assert call.requests("f") == {"start": 1}
    assert call.requests("q") == {"start": 1, "subscriber": 1, "retry": 1}
    # every request counted went out as a PLI to that layer's SSRC, and only those
    assert sorted(call.transport.plis) == sorted([SSRCS["f"]] + [SSRCS["q"]] * 3)

    # h and f unwanted for the grace period: the publisher is told to stop them
    for _ in range(2):
        call.publisher.connection.allocate_layers(clock.now)
        clock.advance(clock.now + UNWANTED_GRACE + 0.5)
    gauges = layer_gauges([track])
    assert (gauges.layers_active, gauges.layers_inactive) == (1, 2)
    told = [e for e in call.events if isinstance(e, PublisherLayers)]
    assert [{a.rid: a.active for a in e.layers} for e in told] == [
        {"q": True, "h": False, "f": False}
    ]

    call.set(TrackSettings(paused=True))
    assert call.state() == "paused"
    samples = scrape(call.service)
    assert samples["sfu_down_tracks_by_state,kind=video,state=paused"] == 1
    assert samples["sfu_down_tracks_by_state,kind=video,state=forwarding"] == 0
    assert samples["sfu_publisher_layers,state=inactive"] == 2
    assert samples["sfu_publisher_layers,state=active"] == 1
    assert samples["sfu_layer_switches_total"] == 1
    assert samples["sfu_keyframe_requests_total,reason=start"] == 2
    assert samples["sfu_keyframe_requests_total,reason=subscriber"] == 1
    assert samples["sfu_keyframe_requests_total,reason=retry"] == 1
    assert samples["sfu_down_tracks,kind=video"] == 1

    # both leave: the counters stay, the gauges fall to zero
    await call.service.rooms_by_id["room"].remove(call.subscriber, "left")
    await call.service.rooms_by_id["room"].remove(call.publisher, "left")
    samples = scrape(call.service)
    assert samples["sfu_layer_switches_total"] == 1
    assert samples["sfu_keyframe_requests_total,reason=start"] == 2
    assert samples["sfu_keyframe_requests_total,reason=retry"] == 1
    assert samples["sfu_down_tracks_by_state,kind=video,state=paused"] == 0
    assert samples["sfu_publisher_layers,state=inactive"] == 0


async def test_a_subscriber_connecting_asks_for_the_keyframe_it_starts_with(call: Call) -> None:
    call.send("q", keyframe=True)
    call.send("q")
    call.down_track.sink.connected = False  # type: ignore[misc]
    call.track.add_down_track(call.down_track)
    assert call.requests("q") == {}  # not connected: nobody to send it to yet
    call.subscriber._on_connected()
    assert call.requests("q") == {"start": 1}
    assert call.state() == "starting"


def test_keyframe_requests_add_up_by_reason() -> None:
    a = MediaTotals(keyframe_requests_subscriber=1, keyframe_requests_retry=2)
    a.add(MediaTotals(keyframe_requests_start=3, keyframe_requests_retry=1))
    assert (a.keyframe_requests_subscriber, a.keyframe_requests_start) == (1, 3)
    assert a.keyframe_requests_retry == 3


async def test_pausing_a_forwarding_down_track_stops_it(call: Call) -> None:
    """Regression: set_layer(None) on a down-track with no switch pending did nothing (None is
    its target), so a paused track went on costing its subscriber the whole layer."""
    call.send("q", keyframe=True)
    call.send("q")
    call.track.add_down_track(call.down_track)
    call.send("q", keyframe=True)
    call.publisher.connection.allocate_layers(call.clock.now)  # only q arrives
    assert call.state() == "forwarding" and len(call.sink.sources) == 1
    call.set(TrackSettings(paused=True))
    assert call.state() == "paused"
    call.send("q")
    call.send("q", keyframe=True)
    assert len(call.sink.sources) == 1
    call.set(TrackSettings())  # resumed: from the next keyframe
    assert call.state() == "starting"
    call.send("q", keyframe=True)
    assert call.state() == "forwarding" and len(call.sink.sources) == 2
