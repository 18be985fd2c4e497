"""Transport-cc feedback to a publisher, so that its own send-side estimator runs.

A browser that negotiated transport-cc on the m-lines it publishes estimates its uplink from
the receiver's feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01): without it,
Chromium falls back to REMB and receiver-report loss alone. The server is that receiver: each
packet's transport-wide sequence number and arrival are recorded as it comes in (a header
extension lookup and a list append), and :class:`~sfu.rtp.twcc.FeedbackBuilder` turns them into
feedback messages every :data:`INTERVAL`, on the loop's timer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from sfu.rtp.twcc import FeedbackBuilder, transport_sequence

#: Seconds between feedback messages, as libwebrtc sends them at video rates.
INTERVAL = 0.05


class PublisherFeedback:
    """Records one publisher connection's arrivals and sends the feedback for them."""

    __slots__ = ("_builder", "_loop", "_send", "_timer", "ext_id", "messages")

    def __init__(
        self, ext_id: int, send: Callable[[bytes], None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.ext_id = ext_id
        self._send = send
        self._loop = loop
        # our own RTCP sender SSRC would do; a random one names no stream of ours by accident
        self._builder = FeedbackBuilder(random.getrandbits(32) or 1)
        self._timer: asyncio.TimerHandle | None = None
        self.messages = 0

    def on_rtp(self, data: bytes, now: float) -> None:
        """Per decrypted packet from the publisher, before it is routed."""
        seq = transport_sequence(data, self.ext_id)
        if seq is None:
            return
        builder = self._builder
        if not builder.media_ssrc:
            builder.media_ssrc = int.from_bytes(data[8:12], "big")
        builder.record(seq, now)
        if self._timer is None:
            self._timer = self._loop.call_later(INTERVAL, self._flush)

    def _flush(self) -> None:
        self._timer = None
        for message in self._builder.build():
            self._send(bytes(message))
            self.messages += 1

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
