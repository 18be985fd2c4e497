"""Throttling of keyframe requests to one publisher stream.

Subscribers ask for keyframes when they join, switch layers or lose packets; the SFU turns those
into PLI (RFC 4585 §6.3.1) or FIR (RFC 5104 §4.3.1) messages to the publisher. With many
subscribers the requests must be coalesced and spaced out, or the publisher spends its bitrate on
keyframes (the "keyframe storm").
"""

from __future__ import annotations


class KeyframeRequester:
    """At most one keyframe request per ``min_interval`` seconds; the rest wait and coalesce."""

    __slots__ = ("_last_sent", "_pending", "min_interval")

    def __init__(self, min_interval: float = 0.5) -> None:
        self.min_interval = min_interval
        self._last_sent: float | None = None
        self._pending = False

    @property
    def next_due(self) -> float | None:
        """When the pending request may be sent, or None if none is pending."""
        if not self._pending or self._last_sent is None:
            return None
        return self._last_sent + self.min_interval

    def request(self, now: float) -> bool:
        """True: send a request now. False: it joins the pending one (see :attr:`next_due`)."""
        last = self._last_sent
        if last is None or now >= last + self.min_interval:  # same arithmetic as next_due
            self._last_sent = now
            self._pending = False
            return True
        self._pending = True
        return False

    def on_keyframe(self, now: float) -> None:
        """A keyframe arrived: whoever waits for one has it, so the pending request is moot."""
        self._pending = False

    def due(self, now: float) -> bool:
        """True (once) when the pending request's time has come; the caller sends it then."""
        next_due = self.next_due
        if next_due is None or now < next_due:
            return False
        self._last_sent = now
        self._pending = False
        return True
