"""Offers the checks accept, applied as the server applies them (sfu.media.aiortc_bridge
accept_offer on a real aiortc peer connection, sfu/participant.py's order): only ValueError or
aiortc's own negotiation errors may come out. KeyError, IndexError, TypeError, AttributeError
are what participant.py reports as "the server could not apply it": a defect of ours or of the
checks, which should have refused the offer with a reason.

The offer's candidates are removed first, and the connection closed at once: the peer
connection is never told an address to send to.
"""

from __future__ import annotations

import asyncio

from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError

from sfu.media import aiortc_bridge as bridge
from tests.fuzz.harnesses.sdp import SAMPLES, mutate
from tests.fuzz.reader import Reader

EXPECTED = (ValueError, InternalError, InvalidAccessError, InvalidStateError, OperationError)
_loop: asyncio.AbstractEventLoop | None = None


async def _apply(sdp: str) -> None:
    pc = bridge.ServerPeerConnection()
    try:
        try:
            bridge.offered_m_lines(sdp)
            answer = await bridge.accept_offer(pc, sdp)
        except EXPECTED:
            return
        assert answer.startswith("v=0"), answer[:80]
        bridge.offered_m_lines(answer)  # our own answer reads back
    finally:
        await pc.close()


def check_offer(sdp: str) -> None:
    global _loop
    sdp = "\r\n".join(
        line for line in sdp.splitlines() if not line.startswith(("a=candidate", "a=end-of"))
    )
    try:
        bridge.parse_sdp(sdp, "offer")
    except ValueError:
        return
    if _loop is None:
        _loop = asyncio.new_event_loop()
    _loop.run_until_complete(_apply(sdp + "\r\n"))


def run(data: bytes) -> None:
    reader = Reader(data)
    sample = SAMPLES[reader.uint() % len(SAMPLES)]
    check_offer(mutate(sample, reader))


def seeds() -> list[bytes]:
    return [bytes([i]) for i in range(len(SAMPLES))]
