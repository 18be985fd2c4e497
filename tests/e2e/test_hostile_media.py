"""A publisher that sends garbage RTP harms nobody else (issue 8, item 3).

Real server subprocess, real aiortc peers over loopback. Alice publishes a normal video track that
Bob receives; Carol publishes another. Alice then writes hand-made SRTP packets on her own
connection — random sequence numbers and payloads on her declared SSRC, on her RTX SSRC, and on
SSRCs she never declared. What reaches Bob is read off his connection after SRTP (``taps``).
"""

from __future__ import annotations

import asyncio
import random
import re
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import aiohttp
import pytest
from pylibsrtp import Policy, Session

from sfu.rtp.header import payload_bounds
from sfu_client import PALETTE, FrameProbe, MarkerVideoTrack, SfuClient

from . import taps
from .conftest import ClientFactory, SfuServer
from .observe import wait_until

pytestmark = pytest.mark.e2e

TIMEOUT = 20.0
GARBAGE_PACKETS = 3000
#: RFC 3550 §A.1's MAX_MISORDER: how far back a packet may arrive and still count as reordered
MAX_MISORDER = 100

Send = Callable[[bytes], Awaitable[None]]


@dataclass
class Call:
    alice: SfuClient
    bob: SfuClient
    alice_tap: taps.Tap
    bob_tap: taps.Tap
    send_raw: Send  # SRTP with alice's keys, not her sender's session (below)
    ssrc: int  # alice's video SSRC
    rtx_ssrc: int
    payload_type: int
    rtx_payload_type: int
    bob_ssrc: int  # the SSRC Bob receives alice's video on
    carol: SfuClient


def _mid_ssrc(client: SfuClient, mid: str) -> int:
    for section in client.pc.remoteDescription.sdp.split("m=")[1:]:
        if re.search(rf"^a=mid:{re.escape(mid)}\r?$", section, re.M):
            found = re.search(r"^a=ssrc:(\d+) ", section, re.M)
            assert found, section
            return int(found.group(1))
    raise AssertionError(f"no m-line {mid}")


def _rtx_payload_type(sdp: str, payload_type: int) -> int:
    for found in re.finditer(r"^a=fmtp:(\d+) apt=(\d+)\r?$", sdp, re.M):
        if int(found.group(2)) == payload_type:
            return int(found.group(1))
    raise AssertionError(f"no RTX payload type for {payload_type}")


async def _frames(client: SfuClient, sender: SfuClient, count: int) -> FrameProbe:
    assert sender.participant_id is not None
    remote = await client.wait_for_track(sender.participant_id, "video", TIMEOUT)
    return await FrameProbe(remote.track).run(count=count, timeout=TIMEOUT)


async def _call(make_client: ClientFactory, room: str) -> Call:
    alice = await make_client(room, "alice")
    video = await alice.publish(MarkerVideoTrack(PALETTE[0], 160, 120, 15), "camera")
    carol = await make_client(room, "carol")
    await carol.publish(MarkerVideoTrack(PALETTE[1], 160, 120, 15), "camera")
    bob = await make_client(room, "bob")
    for probe in await asyncio.gather(_frames(bob, alice, 3), _frames(bob, carol, 3)):
        assert len(probe.records) == 3
    sender: Any = video.transceiver.sender
    alice_tap = taps.install(alice.pc)
    await wait_until(lambda: any(r.ssrc == sender._ssrc for r in alice_tap.rtp_out), "alice")
    payload_type = next(r.payload_type for r in alice_tap.rtp_out if r.ssrc == sender._ssrc)
    assert alice.participant_id is not None
    remote = await bob.wait_for_track(alice.participant_id, "video", TIMEOUT)
    bob_tap = taps.install(bob.pc)
    return Call(
        alice=alice,
        bob=bob,
        alice_tap=alice_tap,
        bob_tap=bob_tap,
        send_raw=_hostile_sender(alice),
        ssrc=sender._ssrc,
        rtx_ssrc=sender._rtx_ssrc,
        payload_type=payload_type,
        rtx_payload_type=_rtx_payload_type(alice.pc.localDescription.sdp, payload_type),
        bob_ssrc=_mid_ssrc(bob, remote.mid),
        carol=carol,
    )


def srtp_policy(client: SfuClient) -> Policy:
    """The client's outbound SRTP keys (RFC 5764 §4.2), as a stack of its own would derive them."""
    dtls: Any = client.pc.getTransceivers()[0].receiver.transport
    selected = dtls._ssl.get_selected_srtp_profile()
    profile = next(p for p in dtls._srtp_profiles if p.openssl_profile == selected)
    view = dtls._ssl.export_keying_material(
        b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length)
    )
    key = profile.get_key_and_salt(view, 1 if dtls._role == "server" else 0)
    return Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile.libsrtp_profile)


def _hostile_sender(client: SfuClient) -> Send:
    """Sends RTP protected with the client's SRTP keys, as a hostile stack of its own would.

    aiortc's own session refuses sequence numbers far behind the ones it sent, and what it sent
    would then be refused: each packet here gets a session of its own (rollover counter 0).
    """
    dtls: Any = client.pc.getTransceivers()[0].receiver.transport
    policy = srtp_policy(client)

    async def send(packet: bytes) -> None:
        await dtls.transport._send(Session(policy).protect(packet))

    return send


async def _send_garbage(call: Call, packets: list[bytes]) -> None:
    """Paced a little (50 packets per 5 ms), so loopback's socket buffers do not drop them."""
    for i, packet in enumerate(packets):
        await call.send_raw(packet)
        if i % 50 == 49:
            await asyncio.sleep(0.005)


def _garbage(rng: random.Random, payload_type: int, ssrc: int | None) -> tuple[bytes, bytes]:
    """(packet, payload): random seq, timestamp, marker and payload; a random SSRC if None."""
    payload = rng.randbytes(rng.randrange(20, 900))
    header = struct.pack(
        "!BBHII",
        0x80,
        rng.choice((0, 0x80)) | payload_type,
        rng.getrandbits(16),
        rng.getrandbits(32),
        rng.getrandbits(32) if ssrc is None else ssrc,
    )
    return header + payload, payload


async def _attack_and_check(call: Call, packets: list[bytes], garbage: set[bytes]) -> None:
    """Send ``packets`` while both videos play; check what Bob got of alice's video."""
    alice_id, carol_id = call.alice.participant_id, call.carol.participant_id
    assert alice_id is not None and carol_id is not None
    carol_video = await call.bob.wait_for_track(carol_id, "video", TIMEOUT)
    carol_video.drain()
    carol_probe = FrameProbe(carol_video.track)
    watching = asyncio.ensure_future(carol_probe.run(duration=4.0, timeout=4.0))
    await _send_garbage(call, packets)
    await watching
    received = [r for r in call.bob_tap.rtp_in if r.ssrc == call.bob_ssrc]  # Bob's count first:
    sent = [r for r in call.alice_tap.rtp_out if r.ssrc == call.ssrc]  # nothing arrives unsent

    # no garbage payload reached Bob, beyond the few random sequence numbers that happen to
    # continue the stream (a window of 16 in 65,536: < 1 expected in 3,000)
    leaked = [r for r in received if _payload(r.payload) in garbage]
    assert len(leaked) <= 8, f"{len(leaked)} garbage packets of {len(packets)} reached Bob"
    # Bob never got more packets than alice's encoder sent, nor one twice, nor far out of order
    assert len(received) <= len(sent), (len(received), len(sent))
    seqs = _unwrap([r.seq for r in received])
    assert len(set(seqs)) == len(seqs), "Bob received a sequence number twice"
    steps = [b - a for a, b in pairwise(seqs)]
    jumps = [s for s in steps if not -MAX_MISORDER <= s <= MAX_MISORDER]
    assert not jumps, f"sequence jumps at Bob: {jumps[:10]} ({len(jumps)} in all)"
    # Carol's video never stopped
    gaps = [b.at - a.at for a, b in pairwise(carol_probe.records)]
    assert len(carol_probe.records) >= 10, f"Carol's video: {len(carol_probe.records)} frames"
    assert max(gaps) < 2.0, f"Carol's video froze for {max(gaps):.1f} s"


def _payload(packet: bytes) -> bytes:
    start, end = payload_bounds(packet)
    return packet[start:end]


def _unwrap(seqs: list[int]) -> list[int]:
    result: list[int] = []
    for seq in seqs:
        if not result:
            result.append(seq)
            continue
        delta = (seq - result[-1]) & 0xFFFF
        result.append(result[-1] + (delta if delta < 0x8000 else delta - 0x10000))
    return result


async def _dropped(server: SfuServer) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.url.rstrip("/") + "/metrics") as response,
    ):
        text = await response.text()
    found = re.findall(r'^sfu_rtp_packets_dropped_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    return {reason: float(value) for reason, value in found}


async def test_random_sequence_numbers_on_the_publishers_own_ssrcs(
    make_client: ClientFactory, room: str, sfu_server: SfuServer
) -> None:
    call = await _call(make_client, room)
    rng = random.Random(8)
    packets, garbage = [], set()
    for i in range(GARBAGE_PACKETS):
        if i % 3:
            packet, payload = _garbage(rng, call.payload_type, call.ssrc)
        else:  # RFC 4588 RTX: its first two payload bytes name the packet it repairs
            packet, payload = _garbage(rng, call.rtx_payload_type, call.rtx_ssrc)
            payload = payload[2:]
        packets.append(packet)
        garbage.add(payload)
    await _attack_and_check(call, packets, garbage)
    # most never pass SRTP's replay check (numbers far behind the highest one it saw); of
    # those that do, what the sequence check refused is counted
    dropped = await _dropped(sfu_server)
    assert dropped.get("sequence", 0) > 0 and dropped.get("retransmission", 0) > 0, dropped


async def test_packets_on_undeclared_ssrcs_are_not_forwarded(
    make_client: ClientFactory, room: str, sfu_server: SfuServer
) -> None:
    call = await _call(make_client, room)
    rng = random.Random(9)
    packets, garbage = [], set()
    for _ in range(GARBAGE_PACKETS):
        packet, payload = _garbage(rng, call.payload_type, None)
        packets.append(packet)
        garbage.add(payload)
    await _attack_and_check(call, packets, garbage)
    dropped = await _dropped(sfu_server)
    # every one is dropped and counted (loopback may lose a few under load)
    assert dropped.get("unknown_ssrc", 0) >= 0.9 * GARBAGE_PACKETS, dropped
