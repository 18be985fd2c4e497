"""AIMD rate control of the delay-based estimate (draft-ietf-rmcat-gcc-02 §5.5).

The detector's signal drives a three-state machine: over-use → *decrease* (to ``beta`` times the
acknowledged rate, the rate the link actually delivered), under-use → *hold* (a queue is
draining; wait), normal → *increase*. Far from convergence the increase is multiplicative
(8 %/s); once an over-use has shown where the link's capacity lies, and while the acknowledged
rate stays near it, it is additive (about one packet per response time, §5.5 "close to
convergence"). The increase is capped near 1.5 x the acknowledged rate + 10 kbit/s so that a
sender that does not use its estimate (application-limited) cannot inflate it; once the ALR
detector says it is application-limited, it does not increase at all (as libwebrtc's
"don't increase in ALR" option): only probes verify more.
"""

from __future__ import annotations

import math
from typing import Literal

from sfu.bwe.delay import BandwidthUsage

RateControlState = Literal["hold", "increase", "decrease"]

#: Multiplicative increase per second far from convergence (draft §5.5: eta = 1.08).
INCREASE_FACTOR = 1.08
#: Decrease to this fraction of the acknowledged rate (draft §5.5: alpha in [0.8, 0.95]).
BETA = 0.85
#: The increase cap relative to the acknowledged rate (as libwebrtc's AimdRateControl).
ACKED_CAP_FACTOR = 1.5
ACKED_CAP_OFFSET = 10_000.0
#: The additive increase assumes this frame rate and packet size (bits).
FRAME_RATE = 30.0
PACKET_BITS = 1200 * 8
MIN_ADDITIVE_INCREASE = 4_000.0


class LinkCapacity:
    """The link's capacity as the acknowledged rates at over-use showed it: an exponential
    average with a normalised variance; its bounds tell near from far from convergence.

    Kept in kbit/s: the variance is normalised by the estimate, and its bounds (0.4..2.5) are
    calibrated for kbit/s (a 400 kbit/s link: +-3 deviations are about +-38 kbit/s)."""

    def __init__(self) -> None:
        self._kbps: float | None = None
        self._variance = 0.4

    @property
    def estimate(self) -> float | None:
        return None if self._kbps is None else self._kbps * 1000.0

    def update(self, sample: float, alpha: float) -> None:
        sample_kbps = sample / 1000.0
        if self._kbps is None:
            self._kbps = sample_kbps
        else:
            self._kbps = (1 - alpha) * self._kbps + alpha * sample_kbps
        error = self._kbps - sample_kbps
        self._variance = (1 - alpha) * self._variance + alpha * error * error / max(self._kbps, 1.0)
        self._variance = min(max(self._variance, 0.4), 2.5)

    def upper_bound(self) -> float:
        if self._kbps is None:
            return math.inf
        return (self._kbps + 3 * math.sqrt(self._variance * self._kbps)) * 1000.0

    def lower_bound(self) -> float:
        if self._kbps is None:
            return 0.0
        return max(self._kbps - 3 * math.sqrt(self._variance * self._kbps), 0.0) * 1000.0

    def reset(self) -> None:
        self._kbps = None


class AimdRateControl:
    """The delay-based estimate (bit/s)."""

    def __init__(
        self, initial_bitrate: float, *, min_bitrate: float, max_bitrate: float, beta: float = BETA
    ) -> None:
        self._min = min_bitrate
        self._max = max_bitrate
        self._beta = beta
        self.estimate = min(max(initial_bitrate, min_bitrate), max_bitrate)
        self.state: RateControlState = "hold"
        self.capacity = LinkCapacity()
        self._last_change: float | None = None

    def set_estimate(self, bitrate: float, now: float) -> None:
        """A verified rate (a probe result) replaces the estimate."""
        self.estimate = self._clamp(bitrate)
        self._last_change = now

    def limit(self, bitrate: float, now: float) -> None:
        """A measured ceiling (a probe that saturated the link): not above it, and hold while
        the queue the probe built drains."""
        self.estimate = self._clamp(min(self.estimate, bitrate))
        self.state = "hold"
        self._last_change = now

    def time_to_reduce_further(self, now: float, acked: float | None, rtt: float) -> bool:
        """Decrease at most once per RTT (10..200 ms), unless the link delivers under half."""
        if self._last_change is None:
            return True
        if now - self._last_change >= min(max(rtt, 0.01), 0.2):
            return True
        return acked is not None and acked < self.estimate / 2

    def update(
        self,
        usage: BandwidthUsage,
        acked: float | None,
        now: float,
        rtt: float,
        *,
        limited: bool = False,
    ) -> float:
        """One step of the state machine for the detector's current signal; ``limited``: the
        sender is application-limited, so "normal" proves nothing above what it sends and the
        estimate does not increase (it holds; probes verify more)."""
        if usage == "overusing":
            self.state = "decrease"
        elif usage == "underusing":
            self.state = "hold"
        elif self.state == "hold":
            self.state = "increase"
        if self.state == "increase" and not limited:
            self._increase(acked, now, rtt)
        elif self.state == "decrease":
            self._decrease(acked, now)
        else:
            self._last_change = now
        return self.estimate

    def _increase(self, acked: float | None, now: float, rtt: float) -> None:
        if acked is not None and acked > self.capacity.upper_bound():
            self.capacity.reset()  # the link changed: far from convergence again
        elapsed = 0.0 if self._last_change is None else min(now - self._last_change, 1.0)
        if self.capacity.estimate is not None:
            increase = self._additive_rate(rtt) * elapsed
        else:
            increase = max(self.estimate * (INCREASE_FACTOR**elapsed - 1.0), 1000.0 * elapsed)
        new = self.estimate + increase
        if acked is not None:
            limit = ACKED_CAP_FACTOR * acked + ACKED_CAP_OFFSET
            new = min(new, max(limit, self.estimate))
        self.estimate = self._clamp(new)
        self._last_change = now

    def _additive_rate(self, rtt: float) -> float:
        """bit/s per second: one average packet per response time (RTT + 100 ms)."""
        bits_per_frame = self.estimate / FRAME_RATE
        packets_per_frame = max(math.ceil(bits_per_frame / PACKET_BITS), 1)
        packet_bits = bits_per_frame / packets_per_frame
        return max(packet_bits / (rtt + 0.1), MIN_ADDITIVE_INCREASE)

    def _decrease(self, acked: float | None, now: float) -> None:
        base = acked if acked is not None else self.estimate
        new = self._beta * base
        if new > self.estimate and self.capacity.estimate is not None:
            new = self._beta * self.capacity.estimate
        if new < self.estimate:
            self.estimate = self._clamp(new)
        if acked is not None:
            if acked < self.capacity.lower_bound():
                self.capacity.reset()
            self.capacity.update(acked, 0.05)
        self.state = "hold"  # wait for the queue to drain before increasing again
        self._last_change = now

    def _clamp(self, bitrate: float) -> float:
        return min(max(bitrate, self._min), self._max)
