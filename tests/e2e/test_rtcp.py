"""The RTCP a real client needs, checked on the wire of real aiortc peers (after SRTP).

- publishers get receiver reports, REMB and a keyframe request when someone subscribes;
- packets lost between a publisher and the server are NACKed and recovered;
- a subscriber's NACKs are answered with retransmissions (RTX) from the server's history;
- sender reports on down-tracks map RTP time to wall-clock time so audio and video stay in sync.
"""

from __future__ import annotations

import re

import pytest

from sfu.api import Kind
from sfu.rtp import rtcp
from sfu.rtp.header import payload_bounds
from sfu_client import PALETTE, TONES, FrameProbe, MarkerVideoTrack, SfuClient, ToneAudioTrack

from . import taps
from .conftest import ClientFactory
from .observe import wait_until

pytestmark = pytest.mark.e2e

TIMEOUT = 20.0


def remote_ssrc(client: SfuClient, mid: str) -> int:
    """The SSRC the server announced for ``mid`` in the client's remote description."""
    sections = client.pc.remoteDescription.sdp.split("m=")[1:]
    for section in sections:
        if re.search(rf"^a=mid:{re.escape(mid)}\r?$", section, re.M):
            found = re.search(r"^a=ssrc:(\d+) ", section, re.M)
            assert found, section
            return int(found.group(1))
    raise AssertionError(f"no m-line {mid}")


def media_payload(packet: bytes) -> bytes:
    """The payload (VP8: from the descriptor, whose picture id differs per frame)."""
    start, end = payload_bounds(packet)
    return packet[start:end]


async def frames(client: SfuClient, sender: SfuClient, kind: str, count: int) -> FrameProbe:
    assert sender.participant_id is not None
    remote = await client.wait_for_track(sender.participant_id, kind, TIMEOUT)  # type: ignore[arg-type]
    probe = FrameProbe(remote.track)
    await probe.run(count=count, timeout=TIMEOUT)
    return probe


async def test_publisher_gets_reports_remb_and_keyframe_request(
    make_client: ClientFactory, room: str
) -> None:
    alice = await make_client(room, "alice")
    video = await alice.publish(MarkerVideoTrack(PALETTE[0], 160, 120, 15), "camera")
    tap = taps.install(alice.pc)
    ssrc = video.transceiver.sender._ssrc
    # alice streams for a while first: her first frames are keyframes anyway, which would
    # (rightly) cancel the server's pending keyframe request
    await wait_until(lambda: len(tap.rtp_out) > 40, "alice streaming")
    bob = await make_client(room, "bob")
    await frames(bob, alice, "video", 3)

    def reported() -> bool:
        blocks = [b for rr in tap.rtcp_of(rtcp.ReceiverReport) for b in rr.reports]
        rembs = [r for r in tap.rtcp_of(rtcp.Remb) if ssrc in r.ssrcs]
        return any(b.ssrc == ssrc for b in blocks) and bool(rembs)

    await wait_until(reported, "an RR block and a REMB for alice's video")
    remb = next(r for r in tap.rtcp_of(rtcp.Remb) if ssrc in r.ssrcs)
    assert 2_000_000 <= remb.bitrate <= 2_500_000
    block = next(b for rr in tap.rtcp_of(rtcp.ReceiverReport) for b in rr.reports if b.ssrc == ssrc)
    assert block.packets_lost == 0
    plis = [p for p in tap.rtcp_of(rtcp.Pli) if p.media_ssrc == ssrc]
    assert plis, "bob's subscription should have asked alice for a keyframe"


async def test_upstream_loss_is_nacked_and_recovered(make_client: ClientFactory, room: str) -> None:
    alice = await make_client(room, "alice")
    video = await alice.publish(MarkerVideoTrack(PALETTE[0], 160, 120, 15), "camera")
    ssrc = video.transceiver.sender._ssrc
    tap = taps.install(alice.pc)
    bob = await make_client(room, "bob")
    await frames(bob, alice, "video", 2)

    # drop every 10th first transmission of alice's video on its way to the server
    tap.drop_out = lambda s, pt, seq: s == ssrc and seq % 10 == 0
    probe = await frames(bob, alice, "video", 30)

    assert len(tap.dropped_out) >= 3
    nacked = {seq for n in tap.rtcp_of(rtcp.Nack) if n.media_ssrc == ssrc for seq in n.lost}
    dropped = {r.seq for r in tap.dropped_out}
    assert dropped & nacked, f"server NACKed {sorted(nacked)[:10]}, dropped {sorted(dropped)[:10]}"
    retransmitted = [r for r in tap.rtp_out if r.ssrc != ssrc and r.payload_type != 96]
    assert retransmitted, "alice never retransmitted (RTX) what the server NACKed"
    assert len(probe.records) == 30
    assert probe.dominant_color_index() == 0


async def test_subscriber_nacks_are_answered_from_history(
    make_client: ClientFactory, room: str
) -> None:
    alice = await make_client(room, "alice")
    await alice.publish(MarkerVideoTrack(PALETTE[0], 160, 120, 15), "camera")
    bob = await make_client(room, "bob")
    await frames(bob, alice, "video", 2)
    assert alice.participant_id is not None
    remote = await bob.wait_for_track(alice.participant_id, "video", TIMEOUT)
    ssrc = remote_ssrc(bob, remote.mid)
    tap = taps.install(bob.pc)

    tap.drop_in = lambda s, pt, seq: s == ssrc and seq % 10 == 0
    probe = await frames(bob, alice, "video", 30)

    assert len(tap.dropped_in) >= 3
    # RFC 4588: an RTX packet carries the original sequence number in its first two bytes
    recovered = set()
    for record in tap.rtp_in:
        if record.ssrc != ssrc:
            start, _ = payload_bounds(record.payload)
            recovered.add(int.from_bytes(record.payload[start : start + 2]))
    dropped = {r.seq for r in tap.dropped_in}
    assert dropped & recovered, "the server did not retransmit what bob lost"
    assert len(probe.records) == 30


async def test_sender_reports_follow_the_publishers_clock(
    make_client: ClientFactory, room: str
) -> None:
    """Down-track SRs map RTP to NTP as the publisher's own SRs do, audio and video alike."""
    alice = await make_client(room, "alice")
    published = await alice.publish_many(
        [
            (MarkerVideoTrack(PALETTE[0], 160, 120, 15), "camera"),
            (ToneAudioTrack(TONES[0]), "microphone"),
        ]
    )
    alice_ssrc: dict[str, int] = {t.kind: t.transceiver.sender._ssrc for t in published}
    alice_tap = taps.install(alice.pc)
    bob = await make_client(room, "bob")
    await frames(bob, alice, "video", 2)
    assert alice.participant_id is not None
    bob_ssrc: dict[str, int] = {}
    kinds: tuple[Kind, ...] = ("audio", "video")
    for kind in kinds:
        remote = await bob.wait_for_track(alice.participant_id, kind, TIMEOUT)
        bob_ssrc[kind] = remote_ssrc(bob, remote.mid)
    bob_tap = taps.install(bob.pc)

    def have_reports() -> bool:
        reported = {sr.ssrc for sr in bob_tap.rtcp_of(rtcp.SenderReport)}
        return set(bob_ssrc.values()) <= reported

    await wait_until(have_reports, "sender reports for both of alice's tracks")
    rates = {"audio": 48000, "video": 90000}
    errors = {}
    for name, rate in rates.items():
        # the munger's timestamp offset, from one packet seen leaving alice and reaching bob
        sent = {
            media_payload(r.payload): r.timestamp
            for r in alice_tap.rtp_out
            if r.ssrc == alice_ssrc[name]
        }
        offsets = [
            (r.timestamp - sent[media_payload(r.payload)]) % 2**32
            for r in bob_tap.rtp_in
            if r.ssrc == bob_ssrc[name] and media_payload(r.payload) in sent
        ]
        assert offsets, f"no {name} packet matched between alice and bob"
        offset = offsets[-1]
        ours = [r for r in bob_tap.rtcp_of(rtcp.SenderReport) if r.ssrc == bob_ssrc[name]][-1]
        theirs = [
            r for r in alice_tap.rtcp_of(rtcp.SenderReport, sent=True) if r.ssrc == alice_ssrc[name]
        ][-1]
        assert ours.ntp_timestamp != 0 and ours.packet_count > 0
        # where alice's own mapping puts the RTP time of our SR's NTP instant
        seconds = (ours.ntp_timestamp - theirs.ntp_timestamp) / 2**32
        expected = (theirs.rtp_timestamp + round(seconds * rate) + offset) % 2**32
        error = ((ours.rtp_timestamp - expected + 2**31) % 2**32 - 2**31) / rate
        errors[name] = error
    print(
        f"SR mapping error vs the publisher's: audio {errors['audio'] * 1000:.1f} ms, "
        f"video {errors['video'] * 1000:.1f} ms"
    )
    # the SRs' transit time (a few ms) is expected; a wrong offset or clock rate is far off
    assert all(abs(e) < 0.03 for e in errors.values()), errors
    # one clock offset per publisher: audio and video are shifted alike (lip sync kept)
    assert abs(errors["audio"] - errors["video"]) < 0.005, errors
