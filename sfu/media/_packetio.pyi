from collections.abc import Callable
from typing import Any, Literal

from sfu.bwe.feedback import EgressFeedback

MAX_PACKET: int

class SrtpSession:
    def __init__(
        self,
        owner: object,
        ctx: int,
        protect_rtp: int,
        protect_rtcp: int,
        unprotect_rtp: int,
        unprotect_rtcp: int,
    ) -> None: ...
    def unprotect_rtp(self, data: bytes, /) -> bytes | None: ...
    def unprotect_rtcp(self, data: bytes, /) -> bytes | None: ...

class SendBatch:
    """Egresses sharing it queue their sends between begin() and flush(), which sends them with
    one sendmmsg per socket; outside that window they send at once."""

    #: datagrams queued now
    pending: int
    #: sendmmsg calls made, and the datagrams they sent
    flushes: int
    batched: int
    def begin(self) -> None: ...
    def flush(self) -> None: ...

class UdpReader:
    """The shared port's read path: recvmmsg; DTLS/RTP/RTCP from a source in ``routes`` (its
    address octets + port, network order) to that connection's ``data_received(data, 1)``;
    the rest to ``on_datagram(data, (host, port))``; the batch collects what they send."""

    datagrams: int
    reads: int
    routed: int
    truncated: int
    errors: int
    def __init__(
        self,
        fd: int,
        routes: dict[bytes, Any],
        on_datagram: Callable[[bytes, tuple[str, int]], object],
        batch: SendBatch | None = None,
    ) -> None: ...
    def read(self) -> None: ...

class Egress:
    packets_sent: int
    bytes_sent: int
    send_errors: int
    #: the transport-wide sequence number element's id (0: none): RTP packets carrying it are
    #: numbered and recorded (draft-holmer-rmcat-transport-wide-cc-extensions-01)
    transport_cc_id: int
    #: packets sent while this is >= 0 are recorded as that probe cluster's
    probe_cluster: int
    transport_cc_sent: int
    feedback_received: int
    feedback_malformed: int
    #: bit/s RTP may leave at (0: not paced); what exceeds it waits for drain()
    pacing_rate: int
    paced: int
    pace_drops: int
    queued: int
    #: called when a packet is queued into an empty pacer (arm a timer that calls drain())
    on_paced: Callable[[], object] | None
    def __init__(
        self,
        srtp: SrtpSession,
        fd: int,
        host: str,
        port: int,
        relay: Callable[[bytes], object] | None,
        batch: SendBatch | None = None,
    ) -> None: ...
    def send_rewritten(
        self,
        data: bytes,
        payload_start: int,
        payload_type: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        extensions: bytes,
        value_at: int,
        value: bytes,
        /,
    ) -> None: ...
    def send_vp8(
        self,
        data: bytes,
        payload_start: int,
        payload_type: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        extensions: bytes,
        value_at: int,
        value: bytes,
        picture_id: int,
        tl0picidx: int,
        keyidx: int,
        /,
    ) -> None: ...
    def send_rtp(self, packet: bytes, /) -> None: ...
    def send_rtcp(self, packet: bytes, /) -> None: ...
    def transport_feedback(self, fci: bytes, /) -> EgressFeedback | None: ...
    def lone_transport_feedback(
        self, packet: bytes, /
    ) -> EgressFeedback | Literal[False] | None: ...
    def drain(self) -> int: ...
    def unpace(self, payload_type: int, /) -> None: ...
    def close(self) -> None: ...
