"""sfu.media.srtp.SendBatch: the copies a read makes leave in one sendmmsg (scale-out plan §2.5).

Real sockets on 127.0.0.1: what a batched egress sends must be what an unbatched one sends,
byte for byte and in order; nothing is held back outside begin()/flush(); a refused datagram is
its own egress's error; an egress that closes or moves flushes first.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from sfu.media.srtp import Egress, SendBatch, srtp_session
from sfu.rtp.header import rewrite
from tests.unit.test_srtp import REWRITES, rtcp_rr, rtp, sessions


@contextlib.contextmanager
def udp_sockets(count: int) -> Iterator[list[socket.socket]]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
            s.settimeout(2)
        yield sockets
    finally:
        for s in sockets:
            s.close()


def batched(
    batch: SendBatch, tx: Any, sender: socket.socket, port: int, host: str = "127.0.0.1"
) -> Egress:
    """An egress on ``batch`` sending through (a duplicate of) ``sender`` to ``host:port``."""
    return Egress(srtp_session(tx), os.dup(sender.fileno()), host, port, None, batch)


def pending(receiver: socket.socket) -> list[bytes]:
    """What has arrived so far, without waiting."""
    got = []
    receiver.setblocking(False)
    try:
        while True:
            got.append(receiver.recv(4096))
    except BlockingIOError:
        pass
    finally:
        receiver.settimeout(2)
    return got


def numbered(seq: int) -> tuple[Any, ...]:
    """REWRITES[2] (a packet with extensions and a template value) with another sequence number."""
    data, start, payload_type, _, *rest = REWRITES[2]
    return (data, start, payload_type, seq, *rest)


def test_copies_queue_until_flush_then_arrive_byte_equal_in_order() -> None:
    batch = SendBatch()
    with udp_sockets(4) as (sender, *receivers):
        sessions_ = [sessions("AES_CM_128_HMAC_SHA1_80") for _ in receivers]
        egresses = [
            batched(batch, tx, sender, r.getsockname()[1])
            for (tx, _), r in zip(sessions_, receivers, strict=True)
        ]
        batch.begin()
        for seq in (1, 2):
            for egress in egresses:
                egress.send_rewritten(*numbered(seq))
        assert batch.pending == 6
        assert all(pending(r) == [] for r in receivers)  # held until the flush
        batch.flush()
        assert (batch.pending, batch.flushes, batch.batched) == (0, 1, 6)
        for (_, rx), receiver, egress in zip(sessions_, receivers, egresses, strict=True):
            got = [rx.unprotect(receiver.recv(4096)) for _ in (1, 2)]
            assert got == [rewrite(*numbered(seq)) for seq in (1, 2)]
            assert (egress.packets_sent, egress.send_errors) == (2, 0)
        for egress in egresses:
            egress.close()


def test_outside_begin_and_flush_a_send_leaves_at_once() -> None:
    batch = SendBatch()
    tx, rx = sessions("AEAD_AES_128_GCM")
    with udp_sockets(2) as (sender, receiver):
        egress = batched(batch, tx, sender, receiver.getsockname()[1])
        egress.send_rtp(rtp(5))  # a timer's send: no read is under way
        egress.send_rtcp(rtcp_rr())
        assert batch.pending == 0
        assert rx.unprotect(receiver.recv(4096)) == rtp(5)
        assert rx.unprotect_rtcp(receiver.recv(4096)) == rtcp_rr()
        batch.begin()
        batch.flush()
        egress.send_rtp(rtp(6))  # flush ended the window
        assert rx.unprotect(receiver.recv(4096)) == rtp(6)
        egress.close()


def test_runs_of_different_sockets_each_get_their_sendmmsg() -> None:
    batch = SendBatch()
    with udp_sockets(3) as (first, second, receiver):
        port = receiver.getsockname()[1]
        pairs = [sessions("AES_CM_128_HMAC_SHA1_80") for _ in range(2)]
        a = batched(batch, pairs[0][0], first, port)
        b = batched(batch, pairs[1][0], second, port)
        batch.begin()
        a.send_rtp(rtp(1))
        a.send_rtp(rtp(2))
        b.send_rtp(rtp(3))
        a.send_rtp(rtp(4))
        batch.flush()
        assert (batch.flushes, batch.batched) == (3, 4)
        got = [receiver.recvfrom(4096) for _ in range(4)]
        sources = [addr for _, addr in got]
        assert sources == [first.getsockname()] * 2 + [second.getsockname(), first.getsockname()]
        a.close()
        b.close()


def test_a_full_batch_sends_and_goes_on_collecting() -> None:
    batch = SendBatch()
    tx, rx = sessions("AEAD_AES_128_GCM")
    with udp_sockets(2) as (sender, receiver):
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        egress = batched(batch, tx, sender, receiver.getsockname()[1])
        batch.begin()
        for seq in range(100):  # 64 slots
            egress.send_rtp(rtp(seq))
        assert batch.pending == 100 - 64
        batch.flush()
        assert [rx.unprotect(receiver.recv(4096)) for _ in range(100)] == [
            rtp(s) for s in range(100)
        ]
        assert (egress.packets_sent, batch.flushes, batch.batched) == (100, 2, 100)
        egress.close()


def test_a_refused_datagram_is_its_own_egress_error() -> None:
    batch = SendBatch()
    with udp_sockets(2) as (ipv4, receiver):
        port = receiver.getsockname()[1]
        good = batched(batch, sessions("AEAD_AES_128_GCM")[0], ipv4, port)
        # an IPv6 destination on an IPv4 socket: the kernel refuses it (EAFNOSUPPORT/EINVAL)
        bad = batched(batch, sessions("AEAD_AES_128_GCM")[0], ipv4, port, host="::1")
        batch.begin()
        good.send_rtp(rtp(1))
        bad.send_rtp(rtp(2))
        good.send_rtp(rtp(3))
        batch.flush()
        assert (good.packets_sent, good.send_errors) == (2, 0)
        assert (bad.packets_sent, bad.bytes_sent, bad.send_errors) == (0, 0, 1)
        assert len([receiver.recv(4096) for _ in range(2)]) == 2
        good.close()
        bad.close()


@pytest.mark.parametrize("how", ["close", "repath"])
def test_an_egress_flushes_before_its_descriptor_goes(how: str) -> None:
    batch = SendBatch()
    tx, rx = sessions("AES_CM_128_HMAC_SHA1_80")
    with udp_sockets(3) as (sender, receiver, elsewhere):
        session = srtp_session(tx)
        egress = Egress(
            session, os.dup(sender.fileno()), "127.0.0.1", receiver.getsockname()[1], None, batch
        )
        batch.begin()
        egress.send_rtp(rtp(1))
        if how == "close":
            egress.close()
        else:  # an ICE restart moved the pair: the queued packet goes where it was meant to
            egress.__init__(  # type: ignore[misc]
                session,
                os.dup(sender.fileno()),
                "127.0.0.1",
                elsewhere.getsockname()[1],
                None,
                batch,
            )
        assert batch.pending == 0
        assert rx.unprotect(receiver.recv(4096)) == rtp(1)
        batch.flush()
        if how == "repath":
            egress.close()


def test_queued_slots_keep_their_egress_alive() -> None:
    batch = SendBatch()
    tx, rx = sessions("AES_CM_128_HMAC_SHA1_80")
    with udp_sockets(2) as (sender, receiver):
        egress = batched(batch, tx, sender, receiver.getsockname()[1])
        batch.begin()
        egress.send_rtp(rtp(9))
        del egress
        gc.collect()
        batch.flush()  # its descriptor is still open: the slot held the egress
        assert rx.unprotect(receiver.recv(4096)) == rtp(9)


def test_an_egress_needs_a_batch_or_none() -> None:
    tx, _ = sessions("AES_CM_128_HMAC_SHA1_80")
    with pytest.raises(TypeError, match="SendBatch"):
        Egress(srtp_session(tx), -1, "127.0.0.1", 9, print, object())  # type: ignore[arg-type]
