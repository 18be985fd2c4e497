"""The C egress (sfu/media/_packetio.c) with real SRTP, sending to a list instead of a socket.

One per process: the fuzz targets call into it as the server does, and check what it sends by
unprotecting it with the matching inbound session.
"""

from __future__ import annotations

import os
import struct

import pylibsrtp

from sfu.media.srtp import Egress, srtp_session
from sfu.rtp.header import build_extension_block

TRANSPORT_CC_ID = 5


class Relayed:
    def __init__(self) -> None:
        key = os.urandom(30)
        kind = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        out = pylibsrtp.Policy(
            key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=kind
        )
        into = pylibsrtp.Policy(
            key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=kind
        )
        self.tx, self.rx = pylibsrtp.Session(out), pylibsrtp.Session(into)
        self.sent: list[bytes] = []
        self.egress = Egress(srtp_session(self.tx), -1, "127.0.0.1", 9, self.sent.append)
        self.seq = 0

    def next_seq(self) -> int:
        """A new sequence number per packet: the inbound session refuses a replay."""
        self.seq = (self.seq + 1) & 0xFFFF
        return self.seq

    def take(self) -> bytes | None:
        """The last packet sent, decrypted; None if nothing was sent."""
        if not self.sent:
            return None
        packet = self.rx.unprotect(self.sent.pop())
        self.sent.clear()
        return packet

    def numbered(self, count: int) -> None:
        """Send ``count`` packets numbered for transport-cc (so feedback has records to match)."""
        self.egress.transport_cc_id = TRANSPORT_CC_ID
        block = build_extension_block([(1, b"3"), (TRANSPORT_CC_ID, bytes(2))])
        packet = struct.pack("!BBHII", 0x80, 96, 0, 0, 0x55) + b"\x42" * 100
        send, seq = self.egress.send_rewritten, self.seq
        for _ in range(count):  # next_seq() inlined: the bwe target sends up to 600 per input
            seq = (seq + 1) & 0xFFFF
            send(packet, 12, 96, seq, 0, 0x55, block, -1, b"")
        self.seq = seq
        self.sent.clear()


_relayed: Relayed | None = None


def relayed() -> Relayed:
    global _relayed
    if _relayed is None:
        _relayed = Relayed()
    return _relayed
