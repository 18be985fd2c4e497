"""One UDP port for every server peer connection (issue 13 step S2): part of the aiortc bridge.

Only :mod:`sfu.media.aiortc_bridge` imports this module, and it is pinned with it (aioice 0.13.0):
the bridge stays the one place that touches aiortc/aioice internals, this file holds the part of
it that owns the shared sockets, so that the bridge's 2,000 lines do not grow by the whole port.
The design is docs/design/scale-out-plan.md §2.1 to §2.4.

A :class:`UdpPort` binds one socket per ICE host address. Each server ICE connection gets one
:class:`_MuxedStunProtocol` per socket instead of sockets of its own: aioice runs its checks,
consent and data through it as through any ``StunProtocol``, and the datagrams the socket
receives are given to the right connection by :class:`~sfu.media.udp_routes.UdpRoutes` after
their first byte (RFC 7983 §7):

- STUN requests by the local username fragment (RFC 8445 §7.3: the USERNAME before the colon),
  responses by the transaction id their connection registered (RFC 8489 §6.3);
- DTLS, RTP and RTCP by source address, which a connection learns only from a check that
  passed MESSAGE-INTEGRITY (a Binding success response it sent, RFC 8445 §7.3.1.4, or one it
  received to its own check, RFC 8445 §7.2.5.2, which aioice authenticates with the peer's
  password);
- anything unroutable is dropped and counted in :attr:`UdpPort.unroutable`, with no answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import aioice.ice
import aioice.stun
import aioice.turn
import structlog
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

from sfu.media.srtp import SendBatch, UdpReader
from sfu.media.udp_routes import UdpRoutes

log = structlog.get_logger("sfu.udp_port")

Address = tuple[str, int]
#: what a dropped datagram was: STUN (unknown ufrag, transaction or address, or unparsable),
#: DTLS/RTP/RTCP from an address no connection learned, or a first byte RFC 7983 does not assign
Unroutable = Literal["stun", "media", "other"]
#: how often expired transactions are swept (s): a table of at most 256 per connection
SWEEP_INTERVAL = 1.0


class _MuxedTransport(asyncio.DatagramTransport):
    """What a muxed protocol sees as its transport: the shared socket, which it never closes."""

    def __init__(self, shared: _SharedSocket) -> None:
        super().__init__()
        self._shared = shared
        self._closing = False

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if not self._closing:
            self._shared.sendto(data, addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        # "socket" and "sockname" are the shared socket's: MediaTransport dups its descriptor
        # for the C egress, aioice makes the host candidate from its address
        return self._shared.extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing or self._shared.closed

    def close(self) -> None:
        self._closing = True  # this connection's use of the socket ends; the socket stays

    def abort(self) -> None:
        self._closing = True


class _MuxedStunProtocol(aioice.ice.StunProtocol):
    """One connection's ``StunProtocol`` on a shared socket (scale-out plan §2.1).

    Receives nothing itself: :class:`UdpPort` routes to it. Sends through the shared socket,
    registers its transactions so their responses come back to it, and teaches the routes the
    addresses its authenticated checks prove.
    """

    def __init__(self, receiver: aioice.ice.Connection, shared: _SharedSocket) -> None:
        super().__init__(receiver)
        self.shared = shared
        self.connection_made(_MuxedTransport(shared))

    async def close(self) -> None:
        """Unregister from the port; the shared socket stays open (aioice's ``close`` would
        close it, and every other connection's with it)."""
        self.shared.leave(self)
        self.transport.close()
        self.connection_lost(None)  # tells the connection, as a closed socket would
        private: Any = self  # aioice's name-mangled future, set by connection_lost
        closed: asyncio.Future[bool] = private._StunProtocol__closed
        await closed

    async def request(
        self,
        request: aioice.stun.Message,
        addr: tuple[str, int],
        integrity_key: bytes | None = None,
        retransmissions: int | None = None,
    ) -> tuple[aioice.stun.Message, tuple[str, int]]:
        """aioice's transaction, its response routed back here by transaction id (RFC 8489
        §6.3); a success with an integrity key (a connectivity check, RFC 8445 §7.2.5.2: aioice
        drops a response not signed with the peer's password) learns ``addr``."""
        routes = self.shared.port.routes
        transaction_id = request.transaction_id
        routes.expect(transaction_id, self.receiver, time.monotonic())
        try:
            result = await super().request(request, addr, integrity_key, retransmissions)
        finally:
            routes.done(transaction_id)
        if integrity_key is not None and not self.receiver._closing:
            routes.learn((addr[0], addr[1]), self.receiver)
        return result

    def send_stun(self, message: aioice.stun.Message, addr: tuple[str, int]) -> None:
        # aioice sends a Binding success response only to a request that passed USERNAME and
        # MESSAGE-INTEGRITY with our password (Connection.request_received, RFC 8445 §7.3)
        if (
            message.message_class == aioice.stun.Class.RESPONSE
            and message.message_method == aioice.stun.Method.BINDING
        ):
            self.shared.port.routes.learn((addr[0], addr[1]), self.receiver)
        super().send_stun(message, addr)


class _SharedSocket:
    """One bound socket of the port (one ICE host address) and the protocols on it.

    Read in C (:class:`~sfu.media.srtp.UdpReader`, one recvmmsg for many datagrams) when the
    loop says it is readable: media from an authenticated address goes straight to its
    connection, the rest to :meth:`UdpPort.route`.
    """

    def __init__(self, port: UdpPort, sock: socket.socket) -> None:
        self.port = port
        self.sock = sock
        self.sockname: Address = sock.getsockname()[:2]
        self.members: dict[aioice.ice.Connection, _MuxedStunProtocol] = {}
        self.closed = False
        self.reader = UdpReader(sock.fileno(), port.fast_routes, self._datagram, port.batch)
        asyncio.get_running_loop().add_reader(sock.fileno(), self.reader.read)

    def _datagram(self, data: bytes, addr: Address) -> None:
        self.port.route(self, data, addr)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any) -> None:
        """A STUN message, at once; a full buffer drops it as it would a media packet (STUN
        retransmits, RFC 8489 §6.2.1)."""
        with contextlib.suppress(OSError):
            self.sock.sendto(data, addr)

    def extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self.sock
        if name == "sockname":
            return self.sockname
        return default

    def leave(self, protocol: _MuxedStunProtocol) -> None:
        if self.members.get(protocol.receiver) is protocol:
            del self.members[protocol.receiver]
        if protocol.receiver._closing:
            self.port.forget(protocol.receiver)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()


class UdpPort:
    """The shared sockets (one per ICE host address) and the routes between their peers and
    connections. Made by :meth:`open`; :meth:`close` ends it."""

    def __init__(self) -> None:
        self.routes: UdpRoutes[aioice.ice.Connection] = UdpRoutes(on_address=self._mirror)
        #: the address table as the C reader looks it up: packed source -> connection
        self.fast_routes: dict[bytes, aioice.ice.Connection] = {}
        self.sockets: list[_SharedSocket] = []
        #: datagrams dropped because no connection is theirs, by what they were
        self.unroutable: Counter[Unroutable] = Counter()
        #: where the egresses of connections on this port queue their sends during a read
        self.batch = SendBatch()
        self.closed = False
        self._sweeper: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, hosts: Sequence[str], port: int = 0) -> UdpPort:
        """Bind ``port`` (0: an ephemeral one per host) on each of ``hosts``; a host that
        cannot be bound is skipped (as aioice does), OSError if none can."""
        self = cls()
        loop = asyncio.get_running_loop()
        for host in hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                # the size set_udp_receive_buffer gave aioice's own sockets
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE
                )
                sock.bind((host, port))
                sock.setblocking(False)
                shared = _SharedSocket(self, sock)
            except OSError as exc:
                sock.close()
                log.warning("udp port: cannot bind", host=host, port=port, error=str(exc))
                continue
            self.sockets.append(shared)
        if not self.sockets:
            raise OSError(f"udp port: none of {list(hosts)} could be bound on port {port}")
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)
        log.info("udp port open", addresses=[s.sockname for s in self.sockets])
        return self

    @property
    def socknames(self) -> list[Address]:
        return [s.sockname for s in self.sockets]

    def join(self, connection: aioice.ice.Connection, component: int) -> list[Candidate]:
        """A muxed protocol on each socket for ``connection``'s ``component``, in its
        ``_protocols`` (which it closes), and their host candidates (RFC 8445 §5.1.1.1)."""
        candidates = []
        private: Any = connection
        for shared in self.sockets:
            protocol = _MuxedStunProtocol(connection, shared)
            host, port = shared.sockname
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            shared.members[connection] = protocol
            private._protocols.append(protocol)
            candidates.append(protocol.local_candidate)
        return candidates

    def reserve_ufrag(self, connection: aioice.ice.Connection) -> str:
        """A new local username fragment for ``connection``, unused on this port; the old one,
        if any, no longer routes (an ICE restart, RFC 8445 §9)."""
        private: Any = connection
        old = vars(connection).get("_sfu_ufrag")
        if old is not None:
            self.routes.release_ufrag(old)
        ufrag = private._sfu_ufrag = self.routes.reserve_ufrag(connection)
        return ufrag

    def _mirror(self, address: Address, connection: aioice.ice.Connection | None) -> None:
        """Keep :attr:`fast_routes` the routes' address table (UdpRoutes tells each change)."""
        host, port = address
        key = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        key += port.to_bytes(2, "big")
        if connection is None:
            self.fast_routes.pop(key, None)
        else:
            self.fast_routes[key] = connection

    def forget(self, connection: aioice.ice.Connection) -> None:
        self.routes.forget(connection)
        for shared in self.sockets:
            shared.members.pop(connection, None)

    def route(self, shared: _SharedSocket, data: bytes, addr: Address) -> None:
        """Give a datagram received on ``shared`` to its connection (scale-out plan §2.2)."""
        first = data[0] if data else 255
        if first < 4:
            self._route_stun(shared, data, addr)
            return
        if 19 < first < 64 or 127 < first < 192:  # DTLS; RTP/RTCP
            owner = self.routes.by_address(addr)
            protocol = None if owner is None else shared.members.get(owner)
            if protocol is None:
                self.unroutable["media"] += 1
                return
            protocol.receiver.data_received(data, protocol.local_candidate.component)
            return
        self.unroutable["other"] += 1

    def _route_stun(self, shared: _SharedSocket, data: bytes, addr: Address) -> None:
        try:
            message = aioice.stun.parse_message(data)
        except ValueError:
            self.unroutable["stun"] += 1
            return
        kind = message.message_class
        owner: aioice.ice.Connection | None
        if kind == aioice.stun.Class.REQUEST:
            username = message.attributes.get("USERNAME")
            owner = self.routes.by_ufrag(username) if isinstance(username, str) else None
        elif kind in (aioice.stun.Class.RESPONSE, aioice.stun.Class.ERROR):
            owner = self.routes.by_transaction(message.transaction_id, time.monotonic())
        else:  # an indication: aioice ignores them, so does the port
            owner = self.routes.by_address(addr)
        protocol = None if owner is None else shared.members.get(owner)
        if protocol is None:
            self.unroutable["stun"] += 1
            return
        if kind == aioice.stun.Class.REQUEST:
            protocol.receiver.request_received(message, addr, protocol)
        elif kind != aioice.stun.Class.INDICATION:
            transaction = protocol.transactions.get(message.transaction_id)
            if transaction is not None:
                transaction.response_received(message, addr)

    def _sweep(self) -> None:
        self.routes.sweep(time.monotonic())
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)

    def close(self) -> None:
        """Close the sockets. Connections still on them lose their host candidates' sends."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for shared in self.sockets:
            shared.close()
        log.info("udp port closed", unroutable=dict(self.unroutable))
