"""Rooms that grow and churn: m-lines are recycled, SDP stays within what the room allows, a
client cannot make everyone's SDP grow, and a rejected answer does not start an offer storm.

Real server subprocess, real aiortc clients on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from typing import Any

import pytest
from aiortc import MediaStreamTrack, RTCSessionDescription

from sfu_client import ServerError, SfuClient

from .conftest import ClientFactory
from .test_call import MEDIA_TIMEOUT, assert_received, publish_markers, receive

pytestmark = pytest.mark.e2e


class SilentTrack(MediaStreamTrack):
    """A published track that never produces a frame: negotiation without media cost."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.Event().wait()


def _prefix_bundle(match: re.Match[str]) -> str:
    return match.group(1) + " " + " ".join("x" + mid for mid in match.group(2).split())


def receiving_m_lines(client: SfuClient) -> int:
    own = {local.transceiver for local in client.local_tracks.values()}
    return sum(1 for t in client.pc.getTransceivers() if t not in own and t.mid is not None)


def offers(client: SfuClient) -> list[dict[str, Any]]:
    return [dict(m.data) for m in client.history if m.type == "offer"]


async def test_m_lines_of_tracks_that_ended_before_the_answer_are_reused(
    make_client: ClientFactory, room: str
) -> None:
    """A track that ends while the server's offer of it awaits its answer frees its m-line."""
    observer = await make_client(room, "observer")
    first = await make_client(room, "first", auto_subscribe=False)
    # the observer answers nothing while it holds its negotiation lock
    async with observer._negotiation:
        await publish_markers(first, 0, settled=False)
        await observer.wait_for_message("offer")
        await first.leave()
        await observer.wait_for_message("participant-left")
    # the stale offer is answered now: two m-lines whose tracks have ended
    await observer.wait_until(
        lambda: receiving_m_lines(observer) == 2 and observer.pc.signalingState == "stable",
        MEDIA_TIMEOUT,
        "for the stale offer to be answered",
    )

    second = await make_client(room, "second", auto_subscribe=False)
    await publish_markers(second, 1, settled=False)
    await observer.wait_for_subscriptions(MEDIA_TIMEOUT)
    assert_received([await receive(observer, second, "video", 1)])
    # the two m-lines the first publisher's tracks were offered on carry the second's
    assert receiving_m_lines(observer) == 2


async def test_m_lines_stay_bounded_through_concurrent_churn(
    make_client: ClientFactory, room: str
) -> None:
    """Waves of concurrent joiners that publish and leave: the one who stays receives a new
    publisher afterwards, on no more m-lines than it ever received at once."""
    observer = await make_client(room, "observer")
    wave_size = 6
    for wave in range(2):
        clients = await asyncio.gather(
            *(make_client(room, f"w{wave}-{i}", auto_subscribe=False) for i in range(wave_size))
        )
        await asyncio.gather(
            *(
                c.publish_many(
                    [(SilentTrack("audio"), "microphone"), (SilentTrack("video"), "camera")]
                )
                for c in clients
            )
        )
        # leave while the observer's negotiation is in flight
        await asyncio.sleep(0.05 * wave)
        await asyncio.gather(*(c.leave() for c in clients))
    await observer.wait_until(
        lambda: not observer.participants, MEDIA_TIMEOUT, "for the waves to leave"
    )
    last = await make_client(room, "last", auto_subscribe=False)
    await publish_markers(last, 2, settled=False)
    assert_received([await receive(observer, last, "video", 2)])
    m_lines = receiving_m_lines(observer)
    print(f"observer m-lines after churn: {m_lines}")
    assert m_lines <= 2 * wave_size


async def test_answers_larger_than_64_kib_are_accepted(
    make_client: ClientFactory, room: str
) -> None:
    """The server's offers grow with the room, and so do the answers to them: an answer to the
    server's own offer is never refused for its size (it was, past 65,536 characters)."""
    subscriber = await make_client(room, "subscriber")
    for i in range(15):
        publisher = await make_client(room, f"silent{i}", auto_subscribe=False)
        await publisher.publish_many(
            [(SilentTrack(kind), "unknown") for kind in ("audio", "video", "audio", "video")]
        )
    await subscriber.wait_for_subscriptions(MEDIA_TIMEOUT * 2)
    last = await make_client(room, "last", auto_subscribe=False)
    await publish_markers(last, 3, settled=False)
    assert_received([await receive(subscriber, last, "video", 3)])
    local = subscriber.pc.localDescription
    assert local is not None
    print(f"answer of {len(local.sdp)} characters for {receiving_m_lines(subscriber)} m-lines")
    assert len(local.sdp) > 65536
    assert not subscriber.errors


async def test_an_offer_publishing_more_than_allowed_is_refused(
    make_client: ClientFactory, room: str
) -> None:
    """120 sending m-lines once made every other participant's SDP grow; now the offer is
    refused, and nobody else hears of it."""
    watcher = await make_client(room, "watcher")
    greedy = await make_client(room, "greedy", auto_subscribe=False)
    for _ in range(120):
        greedy.pc.addTransceiver(SilentTrack("audio"), direction="sendonly")
    await greedy.pc.setLocalDescription(await greedy.pc.createOffer())
    offer = {"type": "offer", "sdp": greedy.pc.localDescription.sdp}
    print(f"an offer of 120 m-lines: {len(offer['sdp'])} characters")
    with pytest.raises(ServerError) as refused:
        await greedy.request(offer, expect="answer")
    assert refused.value.code == "invalid-sdp"
    assert "at most 16" in refused.value.message
    # rolled back by hand (aiortc has no rollback): a fresh client publishes one too many
    modest = await make_client(room, "modest", auto_subscribe=False)
    with pytest.raises(ServerError) as refused:
        await modest.publish_many([(SilentTrack("audio"), "microphone") for _ in range(5)])
    assert refused.value.code == "invalid-sdp"
    assert "at most 4" in refused.value.message
    await asyncio.sleep(0.5)
    assert not [m for m in watcher.history if m.type == "track-published"]
    assert receiving_m_lines(watcher) == 0


async def test_an_oversized_offer_is_refused(make_client: ClientFactory, room: str) -> None:
    client = await make_client(room, "padded")
    await client.publish_many([(SilentTrack("audio"), "microphone")])
    sdp = client.pc.localDescription.sdp
    padding = "a=x-padding:" + "p" * 1000 + "\r\n"
    with pytest.raises(ServerError) as refused:
        await client.request({"type": "offer", "sdp": sdp + padding * 200}, expect="answer")
    assert refused.value.code == "invalid-sdp"
    assert "characters" in refused.value.message


async def test_rejected_answers_back_off_and_end_the_session(
    make_client: ClientFactory, room: str
) -> None:
    """An answer the server cannot apply made it re-offer at once, forever (774 offers in 5 s,
    mids growing to 4,643). Now it offers again later each time, on the same mids, and ends the
    session after five answers in a row were rejected."""
    broken = await make_client(room, "broken", join=False)
    publisher = await make_client(room, "publisher")
    await publish_markers(publisher, 0)
    answers: list[float] = []

    async def answer_badly() -> None:
        # answer every server offer with m-lines whose mids do not match the offer's
        for seen in itertools.count():
            await broken.wait_until(
                lambda seen=seen: len(offers(broken)) > seen,  # type: ignore[misc]
                15.0,
                "for an offer",
            )
            offer = offers(broken)[seen]
            await broken.pc.setRemoteDescription(
                RTCSessionDescription(sdp=str(offer["sdp"]), type="offer")
            )
            answer = await broken.pc.createAnswer()
            sdp = re.sub(r"(?m)^a=mid:", "a=mid:x", answer.sdp)
            sdp = re.sub(r"(?m)^(a=group:BUNDLE) (.*)$", _prefix_bundle, sdp)
            answers.append(time.monotonic())
            await broken.send({"type": "answer", "sdp": sdp})

    # joined by hand, its own negotiation loop stopped: it never answers by itself
    broken._worker.cancel()
    await broken.join(room, "broken")
    task = asyncio.create_task(answer_badly())
    try:
        bye = await broken.wait_for_message("bye", timeout=20.0)
    finally:
        task.cancel()
    assert bye.data["reason"] == "negotiation-failed"
    assert len(answers) == 5, answers
    gaps = [b - a for a, b in itertools.pairwise(answers)]
    print(f"re-offer gaps after rejected answers: {[round(g, 2) for g in gaps]}")
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps))
    mids = [sorted(o["tracks"]) for o in offers(broken)]
    assert all(m == mids[0] for m in mids), mids
    # the others are not affected
    assert not publisher.errors
