"""A hostile participant in a running call harms no one (issue 12, "Hostile input").

Real server subprocess, real aiortc peers over loopback. Alice publishes video; Bob and Eve
receive it. For WINDOW seconds Eve, with her own SRTP keys (as a hostile stack of her own
would), floods: NACKs for every packet of the last second (100 a second, ~500 sequence numbers
each), PLIs (100 a second), RTCP of bogus lengths and types, RTP on random SSRCs, and malformed
signaling. Measured against a clean window before it: Bob's decoded frame rate (issue 12's
target: within 5 %, printed), the retransmissions Eve got (bounded by the server's budget:
about the stream again, sfu/media/retransmit_budget.py), the keyframe requests Alice got (one
subscriber's at most every 0.5 s), the server's CPU (printed). Eve's signaling gets errors;
her session is not ended for it.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from pylibsrtp import Session

from sfu.media.downtrack import SUBSCRIBER_KEYFRAME_INTERVAL
from sfu.media.retransmit_budget import BASE_RATE, RESERVE
from sfu.rtp import rtcp
from sfu_client import PALETTE, MarkerVideoTrack, SfuClient

from . import taps
from .conftest import ClientFactory, SfuServer
from .test_access import frames_within
from .test_hostile_media import _mid_ssrc, srtp_policy

pytestmark = pytest.mark.e2e

TIMEOUT = 20.0
WINDOW = 4.0
FPS = 15
TICK = 0.01  # the flood's pace: every 10 ms


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _flood(eve: SfuClient, tap: taps.Tap, media_ssrc: int, until: float) -> dict[str, int]:
    dtls: Any = eve.pc.getTransceivers()[0].receiver.transport
    policy = srtp_policy(eve)
    rtcp_session = Session(policy)  # one session: SRTCP indexes must grow (replay protection)
    me = random.getrandbits(32)  # not Eve's own RTCP SSRC: its index would collide with ours
    rng = random.Random(12)
    sent = {"nack": 0, "pli": 0, "rtcp garbage": 0, "rtp garbage": 0, "signaling": 0}
    garbage_signaling = [
        '{"type": "offer"',
        "[]",
        '{"type": "nope"}',
        '{"type": "mute"}',
        "x" * 900,
    ]
    while time.monotonic() < until:
        latest = max((r.seq for r in tap.rtp_in if r.ssrc == media_ssrc), default=0)
        lost = [(latest - n) & 0xFFFF for n in range(500)]
        for feedback in (rtcp.Nack(me, media_ssrc, lost), rtcp.Pli(me, media_ssrc)):
            await dtls.transport._send(rtcp_session.protect_rtcp(bytes(feedback)))
        # RTCP of a bogus length (says 200 words, has 2) and of an unknown type
        bogus = struct.pack("!BBHI", 0x81, 205, 200, me) + rng.randbytes(8)
        unknown = struct.pack("!BBHI", 0x80, 199, 1, me) + rng.randbytes(4)
        for packet in (bogus, unknown):
            await dtls.transport._send(rtcp_session.protect_rtcp(packet))
        header = struct.pack("!BBHII", 0x80, 96, rng.getrandbits(16), 0, rng.getrandbits(32))
        await dtls.transport._send(Session(policy).protect(header + rng.randbytes(200)))
        await eve.send_raw(rng.choice(garbage_signaling))
        for kind in ("nack", "pli", "rtp garbage", "signaling"):
            sent[kind] += 1
        sent["rtcp garbage"] += 2
        await asyncio.sleep(TICK)
    return sent


async def test_a_hostile_participant_harms_no_one(
    make_client: ClientFactory, sfu_server: SfuServer, room: str
) -> None:
    assert sfu_server.process is not None, "needs the server's process (not AIOSFU_E2E_URL)"
    alice = await make_client(room, "alice")
    await alice.publish(MarkerVideoTrack(PALETTE[0], 160, 120, FPS), "camera")
    bob, eve = await make_client(room, "bob"), await make_client(room, "eve")
    assert alice.participant_id is not None
    at_bob = await bob.wait_for_track(alice.participant_id, "video", TIMEOUT)
    at_eve = await eve.wait_for_track(alice.participant_id, "video", TIMEOUT)
    await frames_within(at_bob, 1.0)  # started
    eve_tap, alice_tap = taps.install(eve.pc), taps.install(alice.pc)
    media_ssrc = _mid_ssrc(eve, at_eve.mid)

    pid = sfu_server.process.pid
    cpu = _cpu_seconds(pid)
    clean = await frames_within(at_bob, WINDOW)
    clean_cpu = (_cpu_seconds(pid) - cpu) / WINDOW
    plis_before = len(alice_tap.rtcp_of(rtcp.Pli))
    received_before = len(eve_tap.rtp_in)

    cpu, started = _cpu_seconds(pid), time.monotonic()
    flood = asyncio.create_task(_flood(eve, eve_tap, media_ssrc, started + WINDOW))
    hostile = await frames_within(at_bob, WINDOW)
    sent = await flood
    hostile_cpu = (_cpu_seconds(pid) - cpu) / WINDOW
    elapsed = time.monotonic() - started  # what Eve received is counted over this

    during = eve_tap.rtp_in[received_before:]
    media = [r for r in during if r.ssrc == media_ssrc]
    retransmitted = [r for r in during if r.ssrc != media_ssrc and not r.payload[0] & 0x20]
    plis = len(alice_tap.rtcp_of(rtcp.Pli)) - plis_before
    print(
        f"Bob decoded {clean / WINDOW:.1f} fps clean, {hostile / WINDOW:.1f} fps during the flood"
        f" ({100 * (hostile - clean) / clean:+.1f} %); server CPU {100 * clean_cpu:.0f} % -> "
        f"{100 * hostile_cpu:.0f} % of a core; Eve sent {sent}, got {len(media)} packets and "
        f"{len(retransmitted)} retransmissions; Alice got {plis} PLIs"
    )
    assert hostile >= 0.8 * clean > 0, "the flood slowed Bob's video"
    # about the stream again at most: the budget's reserve, one per packet, its base rate
    assert len(retransmitted) <= RESERVE + len(media) + BASE_RATE * elapsed + 1
    assert sent["nack"] * 500 > 20 * len(retransmitted)  # most of what Eve asked went unanswered
    assert plis <= elapsed / SUBSCRIBER_KEYFRAME_INTERVAL + 1, "Eve's PLIs reached Alice"
    # Eve's garbage got errors; nobody's session ended for it
    assert eve.errors and not eve.closed and not bob.closed and not alice.closed
    assert set(bob.participants) == {alice.participant_id, eve.participant_id}
