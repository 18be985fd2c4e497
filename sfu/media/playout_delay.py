"""The playout delay the server asks a lossy subscriber's browser to keep (RTP header extension
``http://www.webrtc.org/experiments/rtp-hdrext/playout-delay``, libwebrtc's
docs/native-code/rtp-hdrext/playout-delay).

A browser's jitter buffer sizes its delay from the jitter of the frames that arrive whole; a
frame that waits for a retransmission does not count, so on a link with loss and a long round
trip every repair comes after the frame's render time and the picture freezes until it does
(Chromium at 5 % loss, 50 +- 50 ms each way: 3-15 % of the time frozen by its own count,
aiming at 30-80 ms, although every NACK was answered). libwebrtc takes the extension's minimum
as a floor for its target delay (VideoReceiveStream2::UpdatePlayoutDelays ->
VCMTiming::set_min_playout_delay) and offers the extension among its default video ones, so the
server sets the floor to what a repair takes — a round trip, the jitter either way and the time
to notice the hole — for a subscriber that loses packets, and back to 0 (the browser's own
estimate) once its loss is gone.

The element is 3 bytes: minimum and maximum delay, 12 bits each, in 10 ms units.
"""

from __future__ import annotations

import math
from collections import deque

#: The extension's URI (a=extmap), offered on the server's video m-lines.
URI_PLAYOUT_DELAY = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
#: The element's unit (s) and largest value (12 bits).
GRANULARITY = 0.01
MAX_UNITS = (1 << 12) - 1
#: The maximum sent with every minimum: libwebrtc's own default (VCMTiming), so that only the
#: floor changes. (A maximum at or below 0.5 s with a zero minimum would switch Chromium to its
#: low-latency renderer.)
MAX_DELAY = 10.0
#: RTCP fraction lost (RFC 3550 §6.4.1, /256) at which the floor is set: about 2 %, a loss that
#: makes repairs frequent enough to be seen.
LOSSY_FRACTION = 5
#: Reports in a row under LOSSY_FRACTION before the floor goes back to 0 (about 1 s each).
CALM_REPORTS = 10
#: What the floor adds to the round trip: the jitter times this (RFC 3550 interarrival jitter is a
#: mean deviation; a repair meets the spread twice), plus a frame interval or so in which the
#: receiver notices the hole (a frame's last packet lost shows at the next frame).
JITTER_FACTOR = 3.0
DETECTION = 0.05
#: The floor's bounds (s): above MAX_FLOOR the call's latency would cost more than the freezes.
MAX_FLOOR = 0.5
#: The floor is the largest of what the last HOLD_REPORTS lossy reports asked for: one report's
#: round trip is one packet's, and the jitter moves it by tens of milliseconds either way.
HOLD_REPORTS = 10
#: A new floor is sent only when it moved by this much (s): each change rebuilds the
#: subscriber's extension blocks, and the browser moves its delay slowly anyway.
STEP = 0.02


def element(minimum: float, maximum: float = MAX_DELAY) -> bytes:
    """The extension element's 3 bytes for these delays (s), rounded up to 10 ms units."""
    low = min(MAX_UNITS, max(0, math.ceil(round(minimum / GRANULARITY, 6))))
    high = min(MAX_UNITS, max(low, math.ceil(round(maximum / GRANULARITY, 6))))
    return ((low << 12) | high).to_bytes(3, "big")


def parse(value: bytes) -> tuple[float, float]:
    """(minimum, maximum) in seconds from an element's 3 bytes."""
    if len(value) != 3:
        raise ValueError(f"a playout-delay element has 3 bytes, not {len(value)}")
    raw = int.from_bytes(value, "big")
    return (raw >> 12) * GRANULARITY, (raw & 0xFFF) * GRANULARITY


class PlayoutDelayPolicy:
    """The floor for one subscriber's video, from its receiver reports.

    ``floor`` is None until the subscriber first loses enough to need one (the element is then
    not sent at all); afterwards it is a number of seconds, 0 when its loss has been gone for
    CALM_REPORTS reports (the browser keeps the last floor it got, so 0 must be sent).
    """

    def __init__(self) -> None:
        self.floor: float | None = None
        self._calm = 0
        self._wanted: deque[float] = deque(maxlen=HOLD_REPORTS)

    def on_report(self, fraction_lost: int, rtt: float | None, jitter: float) -> bool:
        """Take one report (jitter in seconds); returns whether ``floor`` changed."""
        if fraction_lost < LOSSY_FRACTION:
            self._calm += 1
            if self.floor is None or self.floor == 0.0 or self._calm < CALM_REPORTS:
                return False
            self.floor = 0.0
            self._wanted.clear()
            return True
        self._calm = 0
        if rtt is None:
            return False
        self._wanted.append(min(MAX_FLOOR, rtt + JITTER_FACTOR * jitter + DETECTION))
        wanted = max(self._wanted)
        if self.floor is not None and abs(wanted - self.floor) < STEP:
            return False
        self.floor = wanted
        return True
