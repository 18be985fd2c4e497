"""Group calls through the real server: real aiortc peers over 127.0.0.1.

Each participant publishes a marker colour (PALETTE[i]) and a tone (TONES[i]); a receiver checks
that what it decodes from participant X is X's colour and tone. Timings are printed (run with -s),
and only asserted against generous bounds.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import pytest
from aiortc import MediaStreamTrack

from sfu.api import Kind
from sfu_client import (
    PALETTE,
    TONES,
    FrameProbe,
    LocalTrack,
    MarkerVideoTrack,
    ServerMessage,
    SfuClient,
    ToneAudioTrack,
    closest_color,
)

from .conftest import ClientFactory, SfuServer

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT, FPS = 160, 120, 15
MEDIA_TIMEOUT = 20.0  # generous: a 2-core machine runs the server and every peer
SETTLE_FRAMES = 2  # the first decoded frames of a stream may still be converging


@dataclass
class Reception:
    receiver: SfuClient
    sender: SfuClient
    kind: Kind
    expected: int  # index into PALETTE / TONES
    started: float
    probe: FrameProbe | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.sender.name}->{self.receiver.name} {self.kind}"

    @property
    def first_frame_after(self) -> float | None:
        if self.probe is None or self.probe.first_frame_at is None:
            return None
        return self.probe.first_frame_at - self.started

    def problems(self) -> list[str]:
        """Why this reception does not show the sender's own media (empty when it does)."""
        if self.error:
            return [f"{self.label}: {self.error}"]
        assert self.probe is not None
        if not self.probe.records:
            return [f"{self.label}: no frame decoded within {MEDIA_TIMEOUT} s"]
        if self.kind == "video":
            got = self.probe.color_indexes()[SETTLE_FRAMES:]
            wrong = [i for i in got if i != self.expected]
            if not got or wrong:
                colours = [closest_color(c) for c in self.probe.colors]
                return [
                    f"{self.label}: expected colour {self.expected} {PALETTE[self.expected]}, "
                    f"got palette indexes {colours} (rgb {self.probe.colors[:6]}...)"
                ]
            return []
        frequency = self.probe.frequency()
        if abs(frequency - TONES[self.expected]) > 0.03 * TONES[self.expected]:
            return [f"{self.label}: expected {TONES[self.expected]} Hz, got {frequency:.1f} Hz"]
        return []


async def publish_markers(
    client: SfuClient, index: int, *, audio: bool = True, settled: bool = True
) -> tuple[LocalTrack, LocalTrack | None]:
    """Publish PALETTE[index] (and TONES[index]) in one offer.

    ``settled``: first wait until the server has offered everything the others publish, so this
    client's offer does not cross a server offer. Tests about glare pass ``settled=False``.
    """
    if settled:
        await client.wait_for_subscriptions(MEDIA_TIMEOUT)
    tracks: list[tuple[MediaStreamTrack, str]] = [
        (MarkerVideoTrack(PALETTE[index], WIDTH, HEIGHT, FPS), "camera")
    ]
    if audio:
        tracks.append((ToneAudioTrack(TONES[index]), "microphone"))
    published = await client.publish_many(tracks)
    return published[0], published[1] if audio else None


async def receive(
    receiver: SfuClient,
    sender: SfuClient,
    kind: Kind,
    expected: int,
    *,
    frames: int = 12,
    seconds: float = 1.5,
    fresh: bool = False,
) -> Reception:
    """Wait for ``sender``'s track of ``kind`` at ``receiver`` and decode some of it.

    ``fresh``: drop the frames already queued, to see media that arrives from now on.
    """
    reception = Reception(receiver, sender, kind, expected, time.monotonic())
    assert sender.participant_id is not None
    try:
        remote = await receiver.wait_for_track(sender.participant_id, kind, MEDIA_TIMEOUT)
    except TimeoutError as exc:
        reception.error = str(exc)
        return reception
    if fresh:
        remote.drain()
    probe = reception.probe = FrameProbe(remote.track)
    await probe.run(count=1, timeout=MEDIA_TIMEOUT)
    if probe.records:
        if kind == "video":
            await probe.run(count=frames, timeout=MEDIA_TIMEOUT)
        else:
            await probe.run(duration=seconds)
    return reception


async def receive_all(
    pairs: list[tuple[SfuClient, SfuClient, int]], *, fresh: bool = False
) -> list[Reception]:
    """Video and audio for each (receiver, sender, sender's index), concurrently."""
    jobs = [
        receive(receiver, sender, kind, index, fresh=fresh)
        for receiver, sender, index in pairs
        for kind in ("video", "audio")
    ]
    return list(await asyncio.gather(*jobs))


def assert_received(receptions: list[Reception]) -> None:
    for r in receptions:
        after = r.first_frame_after
        shown = f"{after * 1000:.0f} ms" if after is not None else "never"
        print(f"first {r.kind} frame {r.sender.name}->{r.receiver.name}: {shown}")
    problems = [p for r in receptions for p in r.problems()]
    assert not problems, "\n".join(problems)


def assert_no_client_errors(*clients: SfuClient) -> None:
    errors = {c.name: c.errors for c in clients if c.errors}
    assert not errors, f"unexpected errors: {errors}"


async def test_three_participants_receive_each_other(make_client: ClientFactory, room: str) -> None:
    clients = [await make_client(room, f"p{i}") for i in range(3)]
    for i, client in enumerate(clients):
        await publish_markers(client, i)

    receptions = await receive_all(
        [(r, s, i) for r in clients for i, s in enumerate(clients) if s is not r]
    )

    assert_received(receptions)
    for client in clients:
        others = {c.participant_id for c in clients if c is not client}
        assert set(client.participants) == others
        sources = {t.kind: t.source for t in client.remote_tracks.values()}
        assert sources == {"video": "camera", "audio": "microphone"}
    assert_no_client_errors(*clients)


async def test_three_participants_publishing_at_once(make_client: ClientFactory, room: str) -> None:
    """As real clients do: everyone publishes camera and microphone separately, at the same
    time, so client offers cross server offers (glare) all the time."""
    clients = [await make_client(room, f"p{i}") for i in range(3)]

    async def publish_separately(client: SfuClient, i: int) -> None:
        await client.publish(MarkerVideoTrack(PALETTE[i], WIDTH, HEIGHT, FPS), "camera")
        await client.publish(ToneAudioTrack(TONES[i]), "microphone")

    await asyncio.gather(*(publish_separately(c, i) for i, c in enumerate(clients)))

    receptions = await receive_all(
        [(r, s, i) for r in clients for i, s in enumerate(clients) if s is not r]
    )
    assert_received(receptions)
    assert_no_client_errors(*clients)


async def test_publish_while_the_server_offers(make_client: ClientFactory, room: str) -> None:
    """Glare, deterministic enough: bob publishes while the server offers him alice's tracks."""
    alice = await make_client(room, "alice")
    await publish_markers(alice, 0)
    bob = await make_client(room, "bob")
    await bob.publish(MarkerVideoTrack(PALETTE[1], WIDTH, HEIGHT, FPS), "camera")
    await bob.publish(ToneAudioTrack(TONES[1]), "microphone")

    assert_received(await receive_all([(bob, alice, 0), (alice, bob, 1)]))
    print(f"bob ignored {bob.ignored_offers} server offers (glare)")
    assert_no_client_errors(alice, bob)


async def test_late_joiners_get_video_quickly(make_client: ClientFactory, room: str) -> None:
    """Late joiners need a keyframe from each publisher; three of them join one after another."""
    early = [await make_client(room, f"early{i}") for i in range(2)]
    for i, client in enumerate(early):
        await publish_markers(client, i)
    assert_received(await receive_all([(early[0], early[1], 1), (early[1], early[0], 0)]))
    await asyncio.sleep(2.0)

    problems = []
    for n in range(3):
        joined_at = time.monotonic()
        late = await make_client(room, f"late{n}")
        receptions = await asyncio.gather(
            *(receive(late, sender, "video", i, frames=5) for i, sender in enumerate(early))
        )
        for r in receptions:
            first = r.probe.first_frame_at if r.probe is not None else None
            shown = f"{(first - joined_at) * 1000:.0f} ms" if first is not None else "never"
            print(f"{late.name}: first video frame from {r.sender.name} {shown} after joining")
            if first is not None and first - joined_at > 10.0:
                problems.append(f"{r.label}: first frame {first - joined_at:.1f} s after joining")
            problems.extend(r.problems())
        assert_no_client_errors(late)
        await asyncio.sleep(1.0)
    assert not problems, "\n".join(problems)
    assert_no_client_errors(*early)


async def test_leave_and_rejoin(make_client: ClientFactory, room: str) -> None:
    alice, bob = await make_client(room, "alice"), await make_client(room, "bob")
    await publish_markers(alice, 0)
    await publish_markers(bob, 1)
    assert_received(await receive_all([(bob, alice, 0), (alice, bob, 1)]))

    old_id = alice.participant_id
    await alice.leave()
    assert alice.closed
    assert any(m.type == "left" for m in alice.history)
    left = await bob.wait_for_message("participant-left", participantId=old_id)
    assert left.data.get("reason") == "left"
    await bob.wait_until(lambda: old_id not in bob.participants, what="alice gone")
    await bob.wait_until(
        lambda: all(r.participant_id != old_id for r in bob.remote_tracks.values()),
        what="alice's tracks gone",
    )

    alice = await make_client(room, "alice")
    assert alice.participant_id != old_id
    assert [p.name for p in alice.participants.values()] == ["bob"]
    await publish_markers(alice, 3)  # another colour: a reused m-line must carry the new one
    assert_received(await receive_all([(bob, alice, 3), (alice, bob, 1)]))
    assert_no_client_errors(alice, bob)


async def test_killed_participant_is_removed(make_client: ClientFactory, room: str) -> None:
    victim = await make_client(room, "victim")
    others = [await make_client(room, f"witness{i}") for i in range(2)]
    await publish_markers(victim, 0, audio=False)
    assert_received(await asyncio.gather(*(receive(o, victim, "video", 0) for o in others)))

    victim_id = victim.participant_id
    killed_at = time.monotonic()
    await victim.close()  # no leave message: the socket and the peer connection just go

    for witness in others:
        message = await witness.wait_for_message("participant-left", participantId=victim_id)
        print(
            f"{witness.name}: participant-left after {(message.at - killed_at) * 1000:.0f} ms, "
            f"reason {message.data.get('reason')!r}"
        )
        assert message.at - killed_at < 10.0
        assert message.data.get("reason") != "left", "it never sent leave"
        assert victim_id not in witness.participants
    assert_no_client_errors(*others)


async def test_rooms_are_isolated(make_client: ClientFactory) -> None:
    room_a, room_b = f"iso-a-{time.monotonic_ns()}", f"iso-b-{time.monotonic_ns()}"
    a = [await make_client(room_a, f"a{i}") for i in range(2)]
    b = [await make_client(room_b, f"b{i}") for i in range(2)]
    for i, client in enumerate(a):
        await publish_markers(client, i, audio=False)
    for i, client in enumerate(b):
        await publish_markers(client, 2 + i, audio=False)

    receptions = await asyncio.gather(
        receive(a[0], a[1], "video", 1),
        receive(a[1], a[0], "video", 0),
        receive(b[0], b[1], "video", 3),
        receive(b[1], b[0], "video", 2),
    )
    assert_received(list(receptions))
    await asyncio.sleep(1.0)  # room for anything that would leak late

    for members, strangers in ((a, b), (b, a)):
        stranger_ids = {c.participant_id for c in strangers}
        for client in members:
            peers = {c.participant_id for c in members if c is not client}
            assert set(client.participants) == peers
            assert {r.participant_id for r in client.remote_tracks.values()} <= peers
            for message in client.history:
                text = json.dumps(message.data)
                leaked = [i for i in stranger_ids if i and i in text]
                assert not leaked, f"{client.name} saw {leaked} in {message.data}"
    assert_no_client_errors(*a, *b)


async def expect_error(
    client: SfuClient, send: str | dict[str, object], codes: set[str]
) -> ServerMessage:
    """Send a raw text or a message, and return the ``error`` it causes."""
    since = len(client.history)
    request_id = send.get("requestId") if isinstance(send, dict) else None
    if isinstance(send, str):
        await client.send_raw(send)
    else:
        await client.send(send)

    def is_reply(m: ServerMessage) -> bool:
        return m.type == "error" and (request_id is None or m.request_id == request_id)

    try:
        error = await client.wait_for(is_reply, 5.0, since=since)
    except TimeoutError:
        pytest.fail(f"no error reply to {send!r}; got {[m.data for m in client.history[since:]]}")
    assert error.data.get("code") in codes, f"{send!r} -> {error.data}"
    assert isinstance(error.data.get("message"), str)
    return error


async def test_malformed_messages_get_errors(make_client: ClientFactory, room: str) -> None:
    client = await make_client(room, "", join=False)
    invalid = {"invalid-message"}
    await expect_error(client, "{not json", {"bad-json"})
    await expect_error(client, "[1, 2, 3]", invalid)
    await expect_error(client, "null", invalid)
    await expect_error(client, {"type": "no-such-type", "requestId": "r1"}, invalid)
    await expect_error(client, {"requestId": "r2"}, invalid)
    await expect_error(client, {"type": "join", "requestId": "r3"}, invalid)
    await expect_error(
        client,
        {"type": "join", "v": 1, "room": "no spaces!", "name": "x", "requestId": "r4"},
        invalid,
    )
    await expect_error(
        client,
        {"type": "join", "v": 99, "room": room, "name": "x", "requestId": "r5"},
        {"unsupported-version"},
    )
    await expect_error(
        client, {"type": "offer", "sdp": "v=0", "requestId": "r6"}, {"not-joined", "invalid-state"}
    )
    await expect_error(
        client, {"type": "mute", "trackId": "t", "muted": True, "requestId": "r7"}, {"not-joined"}
    )

    # the same connection still joins and gets media both ways
    await client.join(room, "survivor")
    other = await make_client(room, "other")
    await publish_markers(client, 4)
    await publish_markers(other, 5)
    assert_received(await receive_all([(other, client, 4), (client, other, 5)]))

    # errors after joining do not break it either
    await expect_error(client, {"type": "mute", "requestId": "r8"}, invalid)
    await expect_error(
        client,
        {"type": "mute", "trackId": "nope", "muted": True, "requestId": "r9"},
        {"unknown-track"},
    )
    await expect_error(
        client,
        {"type": "join", "v": 1, "room": room, "name": "again", "requestId": "r10"},
        {"already-joined"},
    )
    await expect_error(client, {"type": "candidate", "requestId": "r11", "sdpMid": 5}, invalid)
    await expect_error(
        client, {"type": "offer", "sdp": "garbage", "requestId": "r12"}, {"invalid-sdp"}
    )
    assert_received(await receive_all([(other, client, 4), (client, other, 5)], fresh=True))
    assert_no_client_errors(other)


async def test_mute_unpublish_and_republish(make_client: ClientFactory, room: str) -> None:
    alice, bob = await make_client(room, "alice"), await make_client(room, "bob")
    video, audio = await publish_markers(alice, 0)
    assert audio is not None
    assert_received(await receive_all([(bob, alice, 0)]))

    await alice.set_muted(audio.track_id, True)
    await bob.wait_for_message(
        "track-muted", participantId=alice.participant_id, trackId=audio.track_id, muted=True
    )
    await bob.wait_until(
        lambda: bob.remote_tracks[audio.track_id].muted, what="the audio track to be muted"
    )

    await alice.unpublish(video.track_id)
    await bob.wait_for_message(
        "track-unpublished", participantId=alice.participant_id, trackId=video.track_id
    )
    await bob.wait_until(
        lambda: video.track_id not in bob.remote_tracks, what="the video track to go"
    )

    await alice.publish(MarkerVideoTrack(PALETTE[5], WIDTH, HEIGHT, FPS), "screen")
    assert_received([await receive(bob, alice, "video", 5)])
    screen = [t for t in bob.remote_tracks.values() if t.kind == "video"]
    assert [t.source for t in screen] == ["screen"]
    assert_no_client_errors(alice, bob)


async def test_server_shutdown_says_bye(
    sfu_server: SfuServer, make_client: ClientFactory, room: str
) -> None:
    if sfu_server.process is None:
        pytest.skip("needs a server this test may stop")
    alice, bob = await make_client(room, "alice"), await make_client(room, "bob")
    await publish_markers(alice, 0)
    assert_received(await receive_all([(bob, alice, 0)]))

    code = await asyncio.to_thread(sfu_server.stop)

    assert code == 0, sfu_server.logs()
    for client in (alice, bob):
        bye = await client.wait_for_message("bye")
        assert bye.data.get("reason") == "server-shutdown"
        closed = await client.wait_for_message("connection-closed")
        assert closed.data.get("reason") == "server-shutdown"
        assert client.closed
