"""SRTP in place, in reused buffers: the one module that touches pylibsrtp's binding (pinned 1.0.0).

``pylibsrtp.Session.protect`` copies a packet into its buffer, allocates a length cell, and copies
the result out into a new ``bytes``. A forwarded packet is protected once per subscriber, so the
forward path instead assembles each rewritten packet directly in :data:`EGRESS` and has libsrtp
encrypt and authenticate it where it lies (RFC 3711 §3.1: the authentication tag is appended,
the payload encrypted in place); the socket sends a view of the buffer. Received packets are
decrypted the same way in :data:`INGRESS` and copied out once, since the SFU keeps them.

The buffers are shared by every connection of the process: the event loop runs one packet at a
time and nothing holds a view across an ``await``.

tests/unit/test_srtp.py checks these functions against pylibsrtp's own API and fails loudly when
an upgrade moves the binding.
"""

from __future__ import annotations

from typing import Any, cast

import pylibsrtp
from pylibsrtp._binding import ffi, lib

#: Largest packet protected or unprotected here; a bigger one is refused (an MTU is ~1500).
MAX_PACKET = 2048
#: Room before the packet, so a forwarded packet's payload can be copied to where its rewritten
#: header will end without moving it again (the new header may be shorter than the old one).
HEADROOM = 256
#: libsrtp's worst-case SRTCP trailer: index, tag, MKI (srtp.h: SRTP_MAX_TRAILER_LEN + 4).
_TRAILER = 4 + 16 + 128
_OK = lib.srtp_err_status_ok


class PacketBuffer:
    """A buffer libsrtp works in: ``view[HEADROOM:]`` is where a packet starts."""

    __slots__ = ("_raw", "length", "start", "view")

    def __init__(self) -> None:
        self._raw = ffi.buffer(ffi.new("unsigned char[]", HEADROOM + MAX_PACKET + _TRAILER))
        self.view = memoryview(self._raw)
        self.start: Any = ffi.from_buffer(self._raw) + HEADROOM  # char* to the packet
        self.length: Any = ffi.new("int *")


#: Where forwarded packets are assembled and protected.
EGRESS = PacketBuffer()
#: Where received packets are decrypted.
INGRESS = PacketBuffer()


class SrtpContext:
    """One direction of a DTLS-SRTP session (a ``pylibsrtp.Session``), used in place."""

    __slots__ = ("_ctx", "_session")

    def __init__(self, session: pylibsrtp.Session) -> None:
        self._session = session  # keeps libsrtp's context alive
        self._ctx = cast(Any, session)._srtp[0]  # the srtp_t behind the session

    def protect_rtp(self, size: int) -> int:
        """Protect the ``size``-byte RTP packet at ``EGRESS.view[HEADROOM:]``: new size, or -1."""
        length = EGRESS.length
        length[0] = size
        if lib.srtp_protect(self._ctx, EGRESS.start, length) != _OK:
            return -1
        return int(length[0])

    def protect_rtcp(self, size: int) -> int:
        """Like :meth:`protect_rtp`, for an RTCP compound packet (RFC 3711 §3.4)."""
        length = EGRESS.length
        length[0] = size
        if lib.srtp_protect_rtcp(self._ctx, EGRESS.start, length) != _OK:
            return -1
        return int(length[0])

    def unprotect_rtp(self, data: bytes) -> bytes | None:
        """The decrypted packet, or None if it fails authentication or the replay check."""
        return self._unprotect(data, lib.srtp_unprotect)

    def unprotect_rtcp(self, data: bytes) -> bytes | None:
        return self._unprotect(data, lib.srtp_unprotect_rtcp)

    def _unprotect(self, data: bytes, function: Any) -> bytes | None:
        size = len(data)
        if size > MAX_PACKET:
            return None
        buffer = INGRESS
        buffer.view[HEADROOM : HEADROOM + size] = data
        length = buffer.length
        length[0] = size
        if function(self._ctx, buffer.start, length) != _OK:
            return None
        return buffer.view[HEADROOM : HEADROOM + length[0]].tobytes()
