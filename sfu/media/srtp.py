"""SRTP for the media plane: the one module that touches pylibsrtp's binding (pinned 1.0.0).

``pylibsrtp.Session.protect`` copies a packet into its buffer, allocates a length cell and
copies the result out into a new ``bytes``; called through cffi once per subscriber copy, that
and the header rewrite around it were a large share of the server's CPU. The forward path
therefore runs in :mod:`sfu.media._packetio` (C): it assembles each rewritten packet in one
static buffer, has libsrtp encrypt and authenticate it where it lies (RFC 3711 §3.1: the tag is
appended, the payload encrypted in place) and writes it to the socket. Received packets are
decrypted into the ``bytes`` object the SFU then keeps.

That module links against nothing: this one hands it the addresses of the libsrtp functions
pylibsrtp was built with and of the session's context. tests/unit/test_srtp.py checks the result
against pylibsrtp's own API and fails loudly when an upgrade moves the binding.
"""

from __future__ import annotations

from typing import Any, cast

import pylibsrtp
from pylibsrtp._binding import ffi, lib

from sfu.media._packetio import MAX_PACKET, Egress, SendBatch, SrtpSession, UdpReader

__all__ = [
    "MAX_PACKET",
    "Egress",
    "SendBatch",
    "SrtpSession",
    "UdpReader",
    "forget_stream",
    "srtp_session",
]


def _address(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


_FUNCTIONS = {
    name: _address(ffi.addressof(lib, "srtp_" + name))
    for name in ("protect", "protect_rtcp", "unprotect", "unprotect_rtcp")
}


def srtp_session(session: pylibsrtp.Session) -> SrtpSession:
    """The C view of one direction of a pylibsrtp session (which it keeps alive)."""
    context = cast(Any, session)._srtp[0]  # the srtp_t behind the session
    return SrtpSession(
        owner=session,
        ctx=_address(context),
        protect_rtp=_FUNCTIONS["protect"],
        protect_rtcp=_FUNCTIONS["protect_rtcp"],
        unprotect_rtp=_FUNCTIONS["unprotect"],
        unprotect_rtcp=_FUNCTIONS["unprotect_rtcp"],
    )


def forget_stream(session: pylibsrtp.Session, ssrc: int) -> bool:
    """Free what ``session`` keeps for the remote SSRC ``ssrc``; False if it keeps nothing.

    An inbound session made for any SSRC (RFC 3711 §3.2.3; libsrtp's ssrc_any_inbound) creates a
    stream — keys, replay window — for every new SSRC that decrypts, and looks streams up in a
    list: without this, a peer sending on many SSRCs slows every later packet of its connection.
    The next packet on ``ssrc`` starts a fresh stream.
    """
    try:
        session.remove_stream(ssrc)
    except pylibsrtp.Error:
        return False
    return True
