"""Unpublishing one of two video tracks after churn: every subscriber keeps every other track.

Issue 8, item 2. A client that unpublishes the documented way (transceiver ``inactive``, then an
offer) sends on that m-line until it has applied the server's answer. The server forgot the
track's SSRC when it applied the offer, learned those late packets anew by payload type, and
routed them to the publisher's other VP8 track: the camera. Its subscribers got screen packets
as the camera's, and when those were numbered ahead of the camera's own, the camera's
down-tracks refused every later camera packet: the camera stopped, for good.

Real server, real aiortc peers. Packets are counted per track on each subscriber's connection
(after SRTP), and each must carry a payload the publisher sent on that track; the track of each
m-line comes from the server offer's ``tracks`` map and its SSRC from the offer's SDP. Two
things left to chance in a real call are fixed, so that the test fails every time without the
fix: the publisher takes a while to apply the answer (as a busy client does), and the screen is
numbered ahead of the camera (half of all calls).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiortc.rtcrtpsender
import pytest
from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription

from sfu.rtp.header import payload_bounds
from sfu_client import PALETTE, TONES, MarkerVideoTrack, SfuClient, ToneAudioTrack

from . import taps
from .conftest import ClientFactory

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT, FPS = 96, 72, 15
ROUNDS = 2
SUBSCRIBERS = 3
TIMEOUT = 20.0  # generous: a 2-core machine runs the server and every peer
#: packets each remaining track must bring each subscriber after the unpublish
PACKETS = 10
#: how long the publisher takes to apply the server's answer: it sends meanwhile
ANSWER_DELAY = 0.3
#: how far the screen's sequence numbers run ahead of the camera's
SEQ_AHEAD = 5000


def ssrc_by_track(client: SfuClient) -> dict[str, int]:
    """The SSRC the server sends each remote track with on ``client``'s connection."""
    remote = client.pc.remoteDescription
    assert remote is not None
    media = SessionDescription.parse(remote.sdp).media
    ssrcs = {m.rtp.muxId: m.ssrc[0].ssrc for m in media if m.ssrc}
    return {track_id: ssrcs[r.mid] for track_id, r in client.remote_tracks.items()}


def payload(record: taps.RtpRecord) -> bytes:
    start, end = payload_bounds(record.payload)
    return record.payload[start:end]


async def churn(make_client: ClientFactory, room: str, round_: int) -> None:
    """Participants join, publish audio and video, and leave: one by one, then together."""

    async def visit(name: str, index: int) -> None:
        client = await make_client(room, name)
        await client.wait_for_subscriptions(TIMEOUT)
        await client.publish_many(
            [
                (MarkerVideoTrack(PALETTE[index], WIDTH, HEIGHT, FPS), "camera"),
                (ToneAudioTrack(TONES[index % len(TONES)]), "microphone"),
            ]
        )
        await asyncio.sleep(0.3)  # the others are offered its tracks meanwhile
        await client.leave()

    for i in range(2):
        await visit(f"seq{round_}.{i}", 3 + i)
    await asyncio.gather(*(visit(f"con{round_}.{i}", 5 + i) for i in range(3)))


async def unpublish_inactive(client: SfuClient, track_id: str) -> None:
    """Unpublish as docs/protocol.md says: direction ``inactive``, then an offer.

    The sender keeps its track, and the answer is applied ANSWER_DELAY late: until then the
    m-line still sends (in aiortc as in browsers, a direction takes effect once negotiated).
    """
    pc: Any = client.pc
    apply = pc.setRemoteDescription

    async def slowly(description: RTCSessionDescription) -> None:
        if description.type == "answer":
            await asyncio.sleep(ANSWER_DELAY)
        await apply(description)

    local = client.local_tracks.pop(track_id)
    pc.setRemoteDescription = slowly
    try:
        async with client._negotiation:
            local.transceiver.direction = "inactive"
            await client._negotiate({})
    finally:
        pc.setRemoteDescription = apply


async def first_packet(tap: taps.Tap, ssrc: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not any(r.ssrc == ssrc for r in tap.rtp_out):
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing sent on SSRC {ssrc} within {TIMEOUT} s")
        await asyncio.sleep(0.02)


async def carried(subscriber: SfuClient, track_ids: set[str]) -> None:
    await subscriber.wait_until(
        lambda: set(subscriber.remote_tracks) == track_ids,
        TIMEOUT,
        f"for exactly the tracks {sorted(track_ids)}",
    )


async def packets_after(
    subscriber: SfuClient, tap: taps.Tap, track_ids: set[str], since: int
) -> dict[str, int]:
    """Packets per track in ``tap.rtp_in[since:]``, once each track has PACKETS (or TIMEOUT
    is over)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        ssrcs = ssrc_by_track(subscriber)
        by_ssrc = {ssrcs[t]: t for t in track_ids if t in ssrcs}
        counts = dict.fromkeys(track_ids, 0)
        for record in tap.rtp_in[since:]:
            track_id = by_ssrc.get(record.ssrc)
            if track_id is not None:
                counts[track_id] += 1
        if min(counts.values()) >= PACKETS or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.2)


async def test_unpublishing_a_second_video_after_churn_keeps_the_others_flowing(
    make_client: ClientFactory, room: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = await make_client(room, "publisher")
    subscribers = [await make_client(room, f"sub{i}") for i in range(SUBSCRIBERS)]
    camera, microphone = await publisher.publish_many(
        [
            (MarkerVideoTrack(PALETTE[0], WIDTH, HEIGHT, FPS), "camera"),
            (ToneAudioTrack(TONES[0]), "microphone"),
        ]
    )
    names = {camera.track_id: "camera", microphone.track_id: "microphone"}
    sources = {camera.track_id: camera, microphone.track_id: microphone}
    await asyncio.gather(*(carried(s, set(names)) for s in subscribers))
    sent = taps.install(publisher.pc)
    tapped = [(s, taps.install(s.pc)) for s in subscribers]
    camera_ssrc = camera.transceiver.sender._ssrc

    problems: list[str] = []
    for round_ in range(ROUNDS):
        await churn(make_client, room, round_)
        # from here on, the publisher's tap saw whatever the subscribers' taps see
        started = [len(tap.rtp_in) for _, tap in tapped]
        camera_seq = next(r.seq for r in reversed(sent.rtp_out) if r.ssrc == camera_ssrc)
        screen_seq = camera_seq + SEQ_AHEAD  # aiortc's own choice: below 32768, at random
        with monkeypatch.context() as patch:
            patch.setattr(aiortc.rtcrtpsender, "random_sequence_number", lambda n=screen_seq: n)
            screen = await publisher.publish(
                MarkerVideoTrack(PALETTE[1], WIDTH, HEIGHT, FPS), "screen"
            )
            await first_packet(sent, screen.transceiver.sender._ssrc)  # it took its number
        await asyncio.gather(*(carried(s, {*names, screen.track_id}) for s in subscribers))

        await unpublish_inactive(publisher, screen.track_id)
        await asyncio.gather(*(carried(s, set(names)) for s in subscribers))
        marks = [len(tap.rtp_in) for _, tap in tapped]
        counts = await asyncio.gather(
            *(
                packets_after(s, tap, set(names), mark)
                for (s, tap), mark in zip(tapped, marks, strict=True)
            )
        )
        for (subscriber, tap), count, start in zip(tapped, counts, started, strict=True):
            got = {names[t]: n for t, n in count.items()}
            print(f"round {round_}: {subscriber.name} got {got} packets after the unpublish")
            problems += [
                f"round {round_}: {subscriber.name} got {n} packets of the publisher's {name} "
                f"within {TIMEOUT} s after its screen was unpublished"
                for name, n in got.items()
                if n < PACKETS
            ]
            ssrcs = ssrc_by_track(subscriber)
            for track_id, local in sources.items():
                ssrc = local.transceiver.sender._ssrc
                own = {payload(r) for r in sent.rtp_out if r.ssrc == ssrc}
                foreign = [
                    r.seq
                    for r in tap.rtp_in[start:]
                    if r.ssrc == ssrcs[track_id] and payload(r) not in own
                ]
                if foreign:
                    problems.append(
                        f"round {round_}: {subscriber.name} got {len(foreign)} packets on the "
                        f"{names[track_id]}'s m-line that the publisher did not send as its "
                        f"{names[track_id]} (seqs {foreign[:5]}...)"
                    )
        if problems:
            break
    assert not problems, "\n".join(problems)
    errors = {c.name: c.errors for c in (publisher, *subscribers) if c.errors}
    assert not errors, f"unexpected errors: {errors}"
