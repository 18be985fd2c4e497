"""sfu.media.publisher_feedback: the server's transport-cc feedback to a publisher."""

from __future__ import annotations

import asyncio
import struct

from sfu.media.publisher_feedback import INTERVAL, PublisherFeedback
from sfu.rtp import rtcp
from sfu.rtp.header import build_extension_block
from sfu.rtp.twcc import TransportFeedback, decode

TCC = 3


def packet(transport_seq: int | None, ssrc: int = 0xABCD) -> bytes:
    elements = [(1, b"0")] + ([(TCC, struct.pack("!H", transport_seq))] if transport_seq else [])
    block = build_extension_block(elements)
    return struct.pack("!BBHII", 0x90, 96, 1, 0, ssrc) + block + b"\x00" * 100


async def test_arrivals_become_feedback_on_the_timer() -> None:
    sent: list[bytes] = []
    feedback = PublisherFeedback(TCC, sent.append, asyncio.get_running_loop())
    for seq, at in ((10, 5.0), (11, 5.001), (13, 5.004)):
        feedback.on_rtp(packet(seq), at)
    feedback.on_rtp(packet(None), 5.005)  # no transport-wide number: nothing to report
    assert sent == [], "sent on the timer, not per packet"
    await asyncio.sleep(INTERVAL * 3)
    assert len(sent) == 1 and feedback.messages == 1
    (message,) = rtcp.parse_compound(sent[0])
    assert isinstance(message, TransportFeedback) and message.media_ssrc == 0xABCD
    reported = decode(message.fci)
    arrivals = dict(reported.packets)
    assert reported.base_seq == 10 and set(arrivals) == {10, 11, 12, 13}
    assert arrivals[12] is None, "12 never arrived"
    assert arrivals[11] is not None and arrivals[10] is not None
    assert arrivals[11] - arrivals[10] == 1000  # µs, in 250 µs steps
    feedback.close()


async def test_quiet_publisher_no_timer() -> None:
    sent: list[bytes] = []
    feedback = PublisherFeedback(TCC, sent.append, asyncio.get_running_loop())
    feedback.on_rtp(packet(1), 1.0)
    feedback.close()  # the connection closed before the timer ran
    await asyncio.sleep(INTERVAL * 2)
    assert sent == []
