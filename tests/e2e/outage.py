"""Network outages for one client, made in the test process (no netem on this kernel).

:class:`CuttableProxy` carries a client's signaling WebSocket to the server over TCP on
127.0.0.1 and can cut it the way a lost Wi-Fi does: open connections are aborted without a
close handshake and new ones refused until it is restored; or stranded, the way a path that dies
silently is: the server's side is aborted, the client's side stays open and hears nothing (the
client notices only by its own pings, or a later cut). :func:`udp_outage` silences a
client's media sockets both ways for the time of a ``with`` block.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from sfu_client import SfuClient

CHUNK = 65536


class CuttableProxy:
    """A TCP proxy from 127.0.0.1:``port`` to ``target`` that can be cut and restored."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._stranded: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task[None]] = set()
        self.down = False
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def cut(self) -> None:
        """Abort every open connection (no FIN, no close frame) and refuse new ones."""
        self.down = True
        for client, upstream in list(self._pairs):
            client.transport.abort()
            upstream.transport.abort()
        self._pairs.clear()
        for client in self._stranded:
            client.transport.abort()
        self._stranded.clear()

    def strand(self) -> None:
        """Abort the server's side of every open connection; the client's side stays open, and
        what it sends is dropped, until :meth:`cut`. New connections are refused."""
        self.down = True
        pairs, self._pairs = list(self._pairs), set()  # so that the pumps leave them open
        for client, upstream in pairs:
            upstream.transport.abort()
            self._stranded.append(client)

    def restore(self) -> None:
        self.down = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink, pair))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(CHUNK):
                sink.write(data)
                await sink.drain()
        # one side finished: close the other (a cut pair is gone already)
        if pair in self._pairs:
            self._pairs.discard(pair)
            for writer in pair:
                writer.close()


class _Silent:
    """A datagram transport that sends nothing (everything else is the real one's)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def sendto(self, data: bytes, addr: Any = None) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextlib.contextmanager
def udp_outage(client: SfuClient) -> Iterator[None]:
    """Nothing in or out of ``client``'s ICE sockets inside the block (a dead network)."""
    dtls: Any = client.pc.getTransceivers()[0].receiver.transport
    protocols = list(dtls.transport._connection._protocols)
    saved = []
    for protocol in protocols:
        saved.append((protocol, protocol.transport))
        protocol.datagram_received = lambda data, addr: None
        protocol.transport = _Silent(protocol.transport)
    try:
        yield
    finally:
        for protocol, transport in saved:
            del protocol.datagram_received
            protocol.transport = transport
