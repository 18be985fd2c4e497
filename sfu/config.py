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
    #: A participant from whom nothing (RTP, RTCP, STUN) arrived for this long is removed.
    peer_timeout: float = 8.0
    #: A participant whose connection is not up this long after negotiating is removed.
    connect_timeout: float = 10.0
    #: Bitrate advertised to each video publisher in REMB (bits/s): the ceiling its encoder may use.
    publisher_max_bitrate: int = 2_500_000
    #: Minimum time between two keyframe requests sent to one publisher stream (seconds).
    keyframe_min_interval: float = 0.3
    #: How long a published video packet is kept to answer subscribers' NACKs (seconds); a
    #: retransmission later than a few round trips arrives after the receiver gave up on it.
    retransmission_window: float = 1.0
    #: Interval of the RTCP reports (SR, RR, REMB) the server sends on each connection (seconds).
    rtcp_interval: float = 1.0
    max_participants_per_room: int = 100
    video_codecs: tuple[str, ...] = field(default=("VP8", "H264"))
