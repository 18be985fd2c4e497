"""What one transport-wide feedback message tells the sender, in the estimator's terms.

The subscriber's feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1) reports, per
transport-wide sequence number, whether and when a packet arrived. The egress
(:class:`sfu.media._packetio.Egress`) matches it against its own send records in C — per packet
work that must not run in Python — and hands over only what the estimator needs: the packet
groups it completed (draft-ietf-rmcat-gcc §5.2: packets sent within a 5 ms burst), the counts for
the loss-based controller and the acknowledged rate, and the packets of probe clusters.

Times are seconds. Send times are on the sender's monotonic clock (``time.monotonic``); arrival
times on the subscriber's clock, whose origin means nothing: only differences count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

#: Packets sent within this many seconds of a group's first one belong to it (draft-ietf-rmcat-gcc
#: §5.2 burst_time).
BURST_TIME = 0.005


#: What ``Egress.transport_feedback`` returns: (groups as (send time, arrival, size), received,
#: lost, received bytes, first arrival, last arrival, probe packets as (cluster, send time,
#: arrival, size), the lowest one-way delay, the size of the packet that arrived first).
EgressFeedback = tuple[
    list[tuple[float, float, int]],
    int,
    int,
    int,
    float | None,
    float | None,
    list[tuple[int, float, float, int]],
    float | None,
    int,
]


class PacketGroup(NamedTuple):
    """A completed group: its last packet's send time, its latest arrival, and its bytes."""

    send_time: float
    arrival_time: float
    size: int


class ProbePacket(NamedTuple):
    """A received packet that was sent while probe cluster ``cluster`` ran."""

    cluster: int
    send_time: float
    arrival_time: float
    size: int


@dataclass(frozen=True, slots=True)
class FeedbackSummary:
    """One feedback message, matched against what was sent.

    ``received``/``lost``: packets of ours the message reports as arrived / not arrived (packets
    it reports that we have no record of are left out). ``received_bytes`` and the arrival span
    ``first_arrival``..``last_arrival`` (None when nothing arrived) give the acknowledged rate.
    ``groups`` are the groups this message completed, in send order (a group still open at the
    message's end completes in a later one), as the egress gives them: plain tuples whose fields
    :class:`PacketGroup` names (a named tuple per group would cost more than detecting on it);
    ``probes`` the received packets of probe clusters. ``min_delay``: the lowest arrival minus
    send time among the received packets (None when nothing arrived): the clocks' offset is in
    it, so only its changes mean anything — a queue every packet of the message waited in.
    ``first_size``: the octets of the packet that arrived first (0 when none did): the arrival
    span ``first_arrival``..``last_arrival`` carried the other ``received_bytes``.
    """

    groups: Sequence[tuple[float, float, int]] = ()
    received: int = 0
    lost: int = 0
    received_bytes: int = 0
    first_arrival: float | None = None
    last_arrival: float | None = None
    probes: Sequence[ProbePacket] = field(default_factory=tuple)
    min_delay: float | None = None
    first_size: int = 0

    @classmethod
    def from_egress(cls, raw: EgressFeedback) -> FeedbackSummary:
        """From ``Egress.transport_feedback``'s tuple."""
        groups, received, lost, received_bytes, first, last, probes, min_delay, first_size = raw
        return cls(
            groups,
            received,
            lost,
            received_bytes,
            first,
            last,
            tuple(ProbePacket(*p) for p in probes) if probes else (),
            min_delay,
            first_size,
        )


@dataclass(frozen=True, slots=True)
class ProbeCluster:
    """A request to probe: send ``bitrate`` bit/s in all (media and padding) for ``duration``
    seconds and at least ``min_packets`` packets, tagged ``cluster`` in the send records."""

    cluster: int
    bitrate: float
    duration: float = 0.015
    min_packets: int = 5
