"""Node links: a TCP connection from one node to another, over which the node that holds a
client's WebSocket relays the client's session to the node that owns its room (issue 13,
docs/design/scale-out-plan.md §4, "relay, not redirect").

The frames and the calls are the workers' (:mod:`sfu.remote`): the accepting node serves its
rooms with a :class:`~sfu.remote.host.ServiceHost`, the connecting one talks to them through a
:class:`~sfu.remote.proxy.RemoteRoomService`. Before that, both prove they know the cluster's
secret: each sends a random nonce, each answers with HMAC-SHA256(secret, nonce + its node id)
(RFC 2104), compared in constant time; a link that fails is closed with nothing served. The
connecting side pings every :data:`PING_INTERVAL`; a link silent for :data:`LOST_AFTER` is lost
on both sides — the relayed sessions end with ``reconnect`` where the WebSockets are, and leave
where the rooms are. Media never crosses a link.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from sfu import api
from sfu.remote.frames import FrameError, read_frame, write_frame
from sfu.remote.host import ServiceHost
from sfu.remote.proxy import RemoteRoomService

log = structlog.get_logger("signaling.cluster")

PING_INTERVAL = 0.5
LOST_AFTER = 1.5
AUTH_TIMEOUT = 2.0
NONCE_BYTES = 16


class LinkRefused(Exception):
    """The other end did not prove it knows the secret (or is not the node expected)."""


def _mac(secret: bytes, nonce: bytes, node_id: str) -> str:
    return hmac.new(secret, nonce + node_id.encode(), hashlib.sha256).hexdigest()


def _nonce(frame: Mapping[str, Any] | None, op: str) -> bytes:
    if frame is None or frame.get("op") != op or not isinstance(frame.get("nonce"), str):
        raise LinkRefused(f"expected {op}")
    try:
        return bytes.fromhex(frame["nonce"])
    except ValueError:
        raise LinkRefused(f"{op}: a nonce that is not hex") from None


def _check(frame: Mapping[str, Any], secret: bytes, nonce: bytes) -> str:
    """The node id ``frame`` proves, with its MAC over our ``nonce``."""
    node, mac = frame.get("node"), frame.get("mac")
    if not isinstance(node, str) or not isinstance(mac, str):
        raise LinkRefused("no node id or MAC")
    if not hmac.compare_digest(_mac(secret, nonce, node), mac):
        raise LinkRefused(f"node {node!r}: wrong MAC")
    return node


class LinkServer:
    """Accepts other nodes' links and serves ``service`` (this node's rooms) on each."""

    def __init__(self, node_id: str, secret: bytes, service: api.RoomService) -> None:
        self._node_id, self._secret, self._service = node_id, secret, service
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self.refused = 0

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._accept, host, port)
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._links.add(task)
        nonce = os.urandom(NONCE_BYTES)
        try:
            write_frame(writer, {"op": "hello", "node": self._node_id, "nonce": nonce.hex()})
            auth = await asyncio.wait_for(read_frame(reader), AUTH_TIMEOUT)
            theirs = _nonce(auth, "auth")
            assert auth is not None
            peer = _check(auth, self._secret, nonce)
            mac = _mac(self._secret, theirs, self._node_id)
            write_frame(writer, {"op": "welcome", "node": self._node_id, "mac": mac})
        except (LinkRefused, FrameError, TimeoutError, ConnectionError) as exc:
            self.refused += 1
            log.warning("node link refused", error=str(exc) or type(exc).__name__)
            writer.close()
            return
        log.info("node link accepted", peer=peer)

        async def pong() -> None:
            return None

        try:
            host = ServiceHost(self._service, reader, writer, extra_ops={"ping": pong})
            await host.run(idle_timeout=LOST_AFTER)
        finally:
            log.info("node link closed", peer=peer)
            if task is not None:
                self._links.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)


async def connect_link(
    address: str, node_id: str, secret: bytes, peer: str
) -> tuple[RemoteRoomService, asyncio.Task[None]]:
    """A link to node ``peer`` at ``address`` (host:port): its rooms' service, and the task
    that pings it (cancelled with the link; it closes the link when the peer goes silent)."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host.strip("[]"), int(port)), AUTH_TIMEOUT
    )
    try:
        hello = await asyncio.wait_for(read_frame(reader), AUTH_TIMEOUT)
        theirs = _nonce(hello, "hello")
        nonce = os.urandom(NONCE_BYTES)
        mac = _mac(secret, theirs, node_id)
        write_frame(writer, {"op": "auth", "node": node_id, "mac": mac, "nonce": nonce.hex()})
        welcome = await asyncio.wait_for(read_frame(reader), AUTH_TIMEOUT)
        if welcome is None or welcome.get("op") != "welcome":
            raise LinkRefused(f"{address}: no welcome (a wrong secret?)")
        if _check(welcome, secret, nonce) != peer:
            raise LinkRefused(f"{address} is not node {peer!r}")
    except BaseException:
        writer.close()
        raise
    service = RemoteRoomService(reader, writer)
    return service, asyncio.ensure_future(_ping(service, writer))


async def _ping(service: RemoteRoomService, writer: asyncio.StreamWriter) -> None:
    while not service.closed:
        await asyncio.sleep(PING_INTERVAL)
        try:
            await asyncio.wait_for(service.call("ping", {}), LOST_AFTER)
        except (TimeoutError, api.SfuError):
            if not service.closed:
                log.warning("node link lost: no answer to a ping")
                writer.transport.abort()  # the proxy ends its sessions with reconnect
            return


class NodeLinks:
    """This node's links to the others, made when a session first needs one."""

    def __init__(self, node_id: str, secret: bytes, address_of: Callable[[str], Any]) -> None:
        self._node_id, self._secret = node_id, secret
        self._address_of = address_of  # async: a peer's link address (host:port), or None
        self._links: dict[str, tuple[RemoteRoomService, asyncio.Task[None]]] = {}
        self._connecting: dict[str, asyncio.Future[RemoteRoomService]] = {}

    async def service(self, peer: str) -> RemoteRoomService:
        """The rooms of node ``peer`` (:class:`~sfu.api.SfuError` if it cannot be reached)."""
        link = self._links.get(peer)
        if link is not None and not link[0].closed:
            return link[0]
        pending = self._connecting.get(peer)
        if pending is None:
            pending = self._connecting[peer] = asyncio.ensure_future(self._connect(peer))
            pending.add_done_callback(lambda _: self._connecting.pop(peer, None))
        return await asyncio.shield(pending)

    async def _connect(self, peer: str) -> RemoteRoomService:
        address = await self._address_of(peer)
        if address is None:
            raise api.SfuError(f"node {peer!r} is not in the cluster (any more)")
        try:
            service, pinger = await connect_link(address, self._node_id, self._secret, peer)
        except (OSError, TimeoutError, LinkRefused, FrameError) as exc:
            raise api.SfuError(f"node {peer!r} cannot be reached: {exc}") from None
        old = self._links.get(peer)
        if old is not None:
            old[1].cancel()
        self._links[peer] = (service, pinger)
        log.info("node link up", peer=peer, address=address)
        return service

    async def close(self) -> None:
        for service, pinger in list(self._links.values()):
            pinger.cancel()
            with contextlib.suppress(Exception):
                await service.aclose()
        self._links.clear()
