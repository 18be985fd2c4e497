"""Transport-cc feedback from a receiving client, as a browser sends it.

The server numbers every packet it sends a subscriber connection (transport-wide sequence number,
draft-holmer-rmcat-transport-wide-cc-extensions-01) and estimates the connection's bandwidth from
the subscriber's feedback. :class:`TransportCcFeedback` reads the number of each received packet
(one header extension lookup per packet, nothing else) and sends the feedback messages that
:class:`sfu.rtp.twcc.FeedbackBuilder` builds, every ``interval`` seconds, on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from sfu.rtp.twcc import FeedbackBuilder, transport_sequence

logger = logging.getLogger(__name__)

#: libwebrtc sends feedback every 50-250 ms depending on the rate; the brief asks for 50-100
DEFAULT_INTERVAL = 0.05

SendRtcp = Callable[[bytes], Awaitable[bool]]  # False: the transport is not connected


class TransportCcFeedback:
    """Feedback for one connection: feed :meth:`on_rtp` every decrypted RTP packet, run
    :meth:`start` once the transport exists, :meth:`stop` when done.

    ``ext_id`` is the negotiated extension id (it may change on renegotiation: set it again).
    """

    def __init__(self, send: SendRtcp, ext_id: int, *, interval: float = DEFAULT_INTERVAL) -> None:
        self.ext_id = ext_id
        self.interval = interval
        # the feedback's own SSRC: this client sends no media of that SSRC (RFC 4585 §6.1)
        self.builder = FeedbackBuilder(random.getrandbits(32))
        self._send = send
        self._task: asyncio.Task[None] | None = None
        #: feedback messages sent, and those the transport refused (not connected yet)
        self.sent = 0
        self.unsent = 0

    def on_rtp(self, packet: bytes, arrival: float) -> None:
        seq = transport_sequence(packet, self.ext_id)
        if seq is not None:
            builder = self.builder
            builder.record(seq, arrival)
            if not builder.media_ssrc and len(packet) >= 12:  # libwebrtc names a received SSRC
                builder.media_ssrc = int.from_bytes(packet[8:12], "big")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="transport-cc-feedback")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def flush(self) -> None:
        """Send what was recorded since the last feedback, now."""
        for message in self.builder.build():
            if await self._send(bytes(message)):
                self.sent += 1
            else:
                self.unsent += 1

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # keep the feedback going: one bad send must not end it
                logger.exception("sending transport-cc feedback failed")
