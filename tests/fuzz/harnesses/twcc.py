"""Transport-cc feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1): the Python
decoder (sfu/rtp/twcc.py) and the C parser the server runs (sfu/media/_transport_cc.c, through
Egress.transport_feedback) take or refuse the same messages, and what decodes encodes back."""

from __future__ import annotations

from sfu.rtp.twcc import TICK_US, decode, encode
from tests.fuzz.harnesses.egress import relayed

#: the 24-bit reference time wraps every 2**24 * 64 ms
_WRAP_US = (1 << 24) * 64_000


def check_fci(fci: bytes) -> None:
    box = relayed()
    if box.egress.transport_cc_sent == 0:
        box.numbered(300)
    try:
        decoded = decode(fci)
    except ValueError as exc:
        decoded, refused = None, str(exc)
    summary = box.egress.transport_feedback(fci)
    if decoded is None:
        # the C parser is laxer in two ways only: a status count of 0, and bytes after the
        # last receive delta (RTCP padding it cannot tell from them)
        lax = "status count 0" in refused or "after its last delta" in refused
        assert summary is None or lax, (
            f"the C parser took feedback the Python one refused: {refused}"
        )
        return
    assert summary is not None, "the C parser refused feedback the Python decoder read"
    arrivals = [None if t is None else t // TICK_US for _, t in decoded.packets]
    if all(t is None for t in arrivals):
        return
    try:
        again = decode(encode(decoded.base_seq, decoded.fb_count, arrivals))
    except ValueError as exc:
        raise AssertionError(f"decoded feedback does not encode back: {exc}") from None
    assert [s for s, _ in again.packets] == [s for s, _ in decoded.packets]
    for (_, a), (_, b) in zip(again.packets, decoded.packets, strict=True):
        assert (a is None) == (b is None)
        assert a is None or b is None or (a - b) % _WRAP_US == 0, (a, b)


def run(data: bytes) -> None:
    check_fci(data)


def seeds() -> list[bytes]:
    return [
        encode(0, 0, [1000, None, 1001, 900, None, None, 5000]),
        encode(65530, 7, [None] * 20 + [3] + [None] * 3 + list(range(3, 40))),
        encode(10, 1, [100 + 300 * i for i in range(30)]),
        encode(1, 2, [5] * 8000),
    ]
