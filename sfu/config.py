"""Settings of the media plane. The CLI (signaling/cli.py) fills them from flags and environment."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class IceServer:
    """A STUN/TURN server handed to aiortc; none are used unless the operator configures them."""

    urls: str
    username: str | None = None
    credential: str | None = None


#: Default of :attr:`MediaConfig.udp_receive_buffer` (bytes).
UDP_RECEIVE_BUFFER = 2 * 1024 * 1024

#: m-lines a client may create on its connection over its whole life (its sending m-lines,
#: inactive ones included): reuse or stop() transceivers rather than adding new ones.
MAX_CLIENT_MLINES = 16
#: What an SDP may take for its session part and for each m-line. A browser's offer lists every
#: codec it has on every m-line (~3-4 KB for video); an answer lists one (~1.2 KB).
SDP_SESSION_BYTES = 16 * 1024
SDP_MLINE_BYTES = 8 * 1024


def sdp_limit(m_lines: int) -> int:
    """The largest SDP accepted from a client whose description may have ``m_lines`` m-lines."""
    return SDP_SESSION_BYTES + SDP_MLINE_BYTES * m_lines


@dataclass(frozen=True, slots=True)
class MediaConfig:
    #: Addresses to gather ICE host candidates on. Empty: every non-loopback interface (aioice's
    #: default). Tests pin ("127.0.0.1",).
    ice_hosts: tuple[str, ...] = ()
    ice_servers: tuple[IceServer, ...] = ()
    #: Kernel receive buffer asked for on every media socket (bytes). A stall of the one event
    #: loop (a busy moment, a GC pause, a descheduled VM) then costs queueing latency instead of
    #: datagrams dropped at the socket; Linux caps it at net.core.rmem_max.
    udp_receive_buffer: int = UDP_RECEIVE_BUFFER
    #: One UDP port for every participant's media, per ICE host address (scale-out plan §2):
    #: that port, 0 for an ephemeral one; None: a socket per connection.
    udp_port: int | None = None
    #: A participant from whom nothing (RTP, RTCP, STUN) arrived for this long is removed.
    peer_timeout: float = 8.0
    #: A participant whose connection is not up this long after negotiating is removed.
    connect_timeout: float = 10.0
    #: The most a video publisher is asked for in REMB (bits/s): its encoder's ceiling. Less
    #: when no subscriber of a single-layer track could take that much (publisher_ceiling).
    publisher_max_bitrate: int = 2_500_000
    #: Subscribers' layers chosen within their bandwidth estimates, paused when nothing fits, and
    #: paced. False: estimates are still made and reported, but limit nothing.
    congestion_control: bool = True
    #: The most a subscriber's bandwidth estimate may reach (bits/s); probes go no higher.
    subscriber_max_bitrate: int = 50_000_000
    #: Minimum time between two keyframe requests sent to one publisher stream (seconds).
    keyframe_min_interval: float = 0.3
    #: How long a published video packet is kept to answer subscribers' NACKs (seconds); a
    #: retransmission later than a few round trips arrives after the receiver gave up on it.
    retransmission_window: float = 1.0
    #: Interval of the RTCP reports (SR, RR, REMB) the server sends on each connection (seconds).
    rtcp_interval: float = 1.0
    max_participants_per_room: int = 100
    #: Rooms one server holds at once; a join that would open one more gets too-many-rooms.
    max_rooms: int = 1000
    #: A server offer the client has not answered in this long ends the participant
    #: (negotiation-timeout): a client that never answers would hold its place for ever.
    negotiation_timeout: float = 30.0
    #: Tracks one participant may publish at once. Every other participant gets an m-line per
    #: track it receives, so this bounds the SDP of everyone in the room.
    max_tracks_per_participant: int = 4
    video_codecs: tuple[str, ...] = field(default=("VP8", "H264"))


def max_sdp_size(config: MediaConfig) -> int:
    """The largest SDP any client can need in a full room: a receiving m-line for each track of
    every other participant, plus the m-lines it may create itself."""
    others = config.max_participants_per_room - 1
    return sdp_limit(others * config.max_tracks_per_participant + MAX_CLIENT_MLINES)


def max_signaling_message(config: MediaConfig) -> int:
    """Default limit of one signaling message: the largest SDP the room allows, plus room for
    the rest of the message."""
    return max_sdp_size(config) + 64 * 1024


def udp_port_taken(config: MediaConfig, error: OSError) -> str:
    """What to tell an operator whose ``--udp-port`` could not be bound."""
    hosts = ", ".join(config.ice_hosts) or "every interface"
    return (
        f"--udp-port {config.udp_port}: cannot bind it on the ICE host addresses ({hosts}): {error}"
    )
