"""Per-copy cost of the VP8 egress: ``Egress.send_vp8`` against ``send_rewritten``.

One 1100-byte VP8 packet (15-bit picture id, TL0PICIDX, TID) sent again and again through a real
SRTP session (AES_CM_128_HMAC_SHA1_80) to a UDP socket on 127.0.0.1 that nobody reads, and
through a relay (no system call: the protected copy goes to a C function). The variants are
interleaved and the best of ``--repeat`` rounds of CPU time kept. Also what the Python side
adds: the descriptor parse (once per received packet) and ``Vp8Rewriter.forward`` (per copy: for a
picture's first packet, and for the others).

    .venv/bin/python -m benchmarks.vp8_egress
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import struct
import time
import timeit
from collections.abc import Callable

import pylibsrtp

from sfu.media.srtp import Egress, srtp_session
from sfu.media.vp8_rewriter import Vp8Rewriter
from sfu.rtp.header import build_extension_block
from sfu.rtp.vp8 import parse_descriptor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000, help="calls per round")
    parser.add_argument("--repeat", type=int, default=7, help="rounds (the best is kept)")
    args = parser.parse_args()

    policy = pylibsrtp.Policy(
        key=os.urandom(30),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    session = pylibsrtp.Session(policy)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
    ):
        sender.bind(("127.0.0.1", 0))
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        egress = Egress(srtp_session(session), os.dup(sender.fileno()), "127.0.0.1", port, None)
        # the same without the system call: protected packets handed to a C function
        relay = Egress(srtp_session(session), -1, "127.0.0.1", 9, len)
        extension = build_extension_block([(1, b"0"), (3, b"\x01\x02\x03")])
        descriptor = b"\x90\xe0\x81\x23\x07\x40"  # X; I (M, 0x123), L 7, T: TID 1
        data = (
            struct.pack("!BBHII", 0x90, 96, 7, 9000, 0x1111)
            + extension
            + descriptor
            + b"\x51\x02\x00"
            + bytes(1100 - len(descriptor) - 3)
        )
        start = 12 + len(extension)
        template = build_extension_block([(1, b"3"), (3, bytes(3))])
        value = b"\xaa\xbb\xcc"
        parsed = parse_descriptor(data, start, len(data))
        assert parsed is not None
        rewriter = Vp8Rewriter()
        rewriter.forward(parsed)
        # one descriptor per picture, the first packet of each (nothing cached); 15-bit wrap
        fresh = Vp8Rewriter()
        pictures = itertools.cycle(
            [parsed._replace(picture_id=pid, tl0picidx=pid & 0xFF) for pid in range(0x8000)]
        )

        # one sequence for all: libsrtp refuses to protect an index twice
        seqs = itertools.count()

        def rewritten() -> None:
            seq = next(seqs) & 0xFFFF
            egress.send_rewritten(data, start, 100, seq, 2, 3, template, 7, value)

        def vp8() -> None:
            seq = next(seqs) & 0xFFFF
            egress.send_vp8(data, start, 100, seq, 2, 3, template, 7, value, 0x4567, 9, -1)

        def vp8_unchanged() -> None:
            seq = next(seqs) & 0xFFFF
            egress.send_vp8(data, start, 100, seq, 2, 3, template, 7, value, -1, -1, -1)

        other = itertools.count()  # (not the egress's: a jump of 2^15 would look like a replay)

        def relay_rewritten() -> None:
            seq = next(seqs) & 0xFFFF
            relay.send_rewritten(data, start, 100, seq, 2, 3, template, 7, value)

        def relay_vp8() -> None:
            seq = next(seqs) & 0xFFFF
            relay.send_vp8(data, start, 100, seq, 2, 3, template, 7, value, 0x4567, 9, -1)

        def counting() -> None:
            next(other) & 0xFFFF

        variants: dict[str, Callable[[], object]] = {
            "send_rewritten": rewritten,
            "send_vp8": vp8,
            "send_vp8 (-1, -1, -1)": vp8_unchanged,
            "relay: send_rewritten": relay_rewritten,
            "relay: send_vp8": relay_vp8,
            "parse_descriptor": lambda: parse_descriptor(data, start, len(data)),
            "Vp8Rewriter.forward": lambda: rewriter.forward(parsed),
            "Vp8Rewriter.forward, new picture": lambda: fresh.forward(next(pictures)),
            "(the timing loop's own work)": counting,
        }
        best = dict.fromkeys(variants, float("inf"))
        for _ in range(args.repeat):
            for name, call in variants.items():
                # CPU time, not wall time: on a shared machine, waiting for a core is not cost
                seconds = timeit.timeit(call, timer=time.thread_time, number=args.number)
                best[name] = min(best[name], seconds / args.number)
        sent = egress.packets_sent + relay.packets_sent
        errors = egress.send_errors + relay.send_errors
        egress.close()
    print(f"{sent} packets sent, {errors} not sent")
    for name, seconds in best.items():
        print(f"{name:34} {seconds * 1e9:8.0f} ns")


if __name__ == "__main__":
    main()
