"""sfu.media.srtp.UdpReader: the shared port's read path in C (scale-out plan §2.5).

Real sockets on 127.0.0.1. DTLS/RTP/RTCP from a source in the routes goes to its connection's
``data_received(data, 1)``; STUN, other first octets and unknown sources go to ``on_datagram``
with the source as asyncio gives it; a datagram too long is dropped and counted; a handler that
raises does not stop the read.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

from sfu.media.srtp import SendBatch, UdpReader


class Connection:
    def __init__(self, fail: bool = False) -> None:
        self.got: list[tuple[bytes, int]] = []
        self.fail = fail

    def data_received(self, data: bytes, component: int) -> None:
        self.got.append((data, component))
        if self.fail:
            raise RuntimeError("a handler's own bug")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    for s in (server, client):
        s.bind(("127.0.0.1", 0))
    server.setblocking(False)
    yield server, client
    server.close()
    client.close()


def key(address: tuple[str, int]) -> bytes:
    return socket.inet_aton(address[0]) + address[1].to_bytes(2, "big")


def test_media_from_a_routed_source_goes_to_its_connection(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    connection = Connection()
    others: list[tuple[bytes, tuple[str, int]]] = []
    reader = UdpReader(
        server.fileno(), {key(client.getsockname()): connection}, lambda d, a: others.append((d, a))
    )
    sent = [b"\x80\x60rtp", b"\x81\xc9rtcp", b"\x16\xfe\xfddtls", b"\x00\x01stun", b"\x40other"]
    for data in sent:
        client.sendto(data, server.getsockname())
    reader.read()
    assert connection.got == [(sent[0], 1), (sent[1], 1), (sent[2], 1)]
    assert others == [(sent[3], client.getsockname()), (sent[4], client.getsockname())]
    assert (reader.datagrams, reader.routed, reader.reads) == (5, 3, 1)


def test_media_from_an_unknown_source_is_for_python_to_count(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    others: list[tuple[bytes, tuple[str, int]]] = []
    reader = UdpReader(
        server.fileno(), {key(("127.0.0.1", 9)): Connection()}, lambda d, a: others.append((d, a))
    )
    client.sendto(b"\x80\x60rtp", server.getsockname())
    reader.read()
    assert others == [(b"\x80\x60rtp", client.getsockname())] and reader.routed == 0


def test_many_datagrams_are_read_in_few_calls_and_too_long_ones_dropped(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    connection = Connection()
    reader = UdpReader(server.fileno(), {key(client.getsockname()): connection}, print)
    client.sendto(b"\x80" + bytes(5000), server.getsockname())  # past the 4096 read buffer
    for n in range(100):
        client.sendto(b"\x80" + bytes([n]), server.getsockname())
    reader.read()
    assert [d[1] for d, _ in connection.got] == list(range(100))
    assert reader.truncated == 1 and reader.reads == 4  # 32 a call, then nothing left


def test_a_handler_that_raises_does_not_stop_the_read(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, client = pair
    reported: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    connection = Connection(fail=True)
    reader = UdpReader(server.fileno(), {key(client.getsockname()): connection}, print)
    for n in range(3):
        client.sendto(b"\x80" + bytes([n]), server.getsockname())
    reader.read()
    assert len(connection.got) == 3 and len(reported) == 3


def test_what_the_handlers_send_leaves_at_the_end_of_the_read(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    batch = SendBatch()
    seen: list[int] = []

    class Forwarding(Connection):
        def data_received(self, data: bytes, component: int) -> None:
            seen.append(batch.pending)  # the reader opened the batch

    reader = UdpReader(server.fileno(), {key(client.getsockname()): Forwarding()}, print, batch)
    client.sendto(b"\x80\x60", server.getsockname())
    reader.read()
    assert seen == [0] and batch.pending == 0


def test_nothing_to_read_is_not_an_error(pair: tuple[socket.socket, socket.socket]) -> None:
    server, _ = pair
    reader = UdpReader(server.fileno(), {}, print)
    reader.read()
    assert (reader.reads, reader.errors) == (0, 0)
    with pytest.raises(TypeError, match="SendBatch"):
        UdpReader(server.fileno(), {}, print, object())  # type: ignore[arg-type]
