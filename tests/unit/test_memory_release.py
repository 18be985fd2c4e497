"""A participant's memory goes back when it leaves, not when CPython's full collection runs.

Its connection's objects are freed by the cycle collector (aiortc's objects reference each other),
whose oldest generation is collected rarely: what a connection owns in C must go at close, and the
service collects soon after a departure (sfu/memory.py).
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Callable

from benchmarks.heap import malloc_stats
from sfu.api import TrackInfo
from sfu.media.layer import LayerReceiver
from sfu.media.receiver import TrackReceiver
from sfu.media.reports import PublisherClock
from sfu.memory import MemoryReclaimer, freeze_startup
from tests.unit.media_doubles import publisher_params
from tests.unit.test_srtp import relayed

TCC_RECORDS = 8192 * 24  # TCC_HISTORY records of 24 octets (sfu/media/_transport_cc.h)


def malloc_in_use() -> int:
    """Octets glibc malloc has handed out and not had back (heap and mmapped blocks)."""
    stats = malloc_stats()
    return stats["in_use_bytes"] + stats["mmapped_bytes"]


def test_a_closed_egress_gives_back_its_send_records() -> None:
    egress, _, _ = relayed("AEAD_AES_128_GCM")
    before = malloc_in_use()
    egress.transport_cc_id = 5  # transport-cc negotiated: the records are allocated
    allocated = malloc_in_use() - before
    assert allocated >= TCC_RECORDS
    # the egress itself stays referenced (from a departed connection's cycle, waiting for the
    # collector): close, not its deallocation, must give the records back
    egress.close()
    assert malloc_in_use() - before < allocated - TCC_RECORDS // 2
    assert egress.transport_cc_id == 0  # nothing is numbered after close ...
    egress.send_rtcp(b"\x80\xc9\x00\x01\x00\x00\x12\x34")  # ... and sending is a no-op
    assert egress.transport_cc_sent == 0


def test_an_egress_used_again_after_close_allocates_again() -> None:
    egress, _, _ = relayed("AEAD_AES_128_GCM")
    egress.transport_cc_id = 5
    egress.close()
    egress.transport_cc_id = 5  # not what the service does; must not crash
    assert egress.transport_cc_id == 5


class _Cyclic:
    def __init__(self) -> None:
        self.me = self
        self.payload = bytearray(1 << 16)


async def test_a_departure_collects_the_leavers_cycles() -> None:
    gc.disable()  # only the reclaimer collects here
    try:
        leaver = _Cyclic()
        gc.collect()  # it lived long enough to reach the oldest generation, as a participant does
        alive = weakref.ref(leaver)
        del leaver
        reclaimer = MemoryReclaimer(trim=lambda pad: 1, delay=0.05, interval=0.05)
        reclaimer.departed()
        await asyncio.sleep(0.3)
        reclaimer.close()
        assert alive() is None
        assert reclaimer.runs == 1
    finally:
        gc.enable()


def test_startup_objects_are_left_out_of_collections() -> None:
    made_before = _Cyclic()
    try:
        freeze_startup()
        assert gc.get_freeze_count() > 0
        assert not any(o is made_before for o in gc.get_objects())  # collections skip it
    finally:
        gc.unfreeze()
    assert any(o is made_before for o in gc.get_objects())


class _LoopUpstream:
    """A publisher's connection as the receiver sees it, its timers on the real event loop."""

    def __init__(self) -> None:
        self.requests: list[int] = []

    def request_keyframe_now(self, media_ssrc: int) -> None:
        self.requests.append(media_ssrc)

    def schedule_nack(self, layer: LayerReceiver) -> None:
        return None

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback)


async def test_a_closed_track_leaves_no_keyframe_timer_holding_its_publisher() -> None:
    # a throttled keyframe request arms a timer (up to a second): when the publisher leaves
    # meanwhile, the timer must not keep its connection, and with it the participant, alive
    upstream = _LoopUpstream()
    info = TrackInfo("TR_a", "PA_a", "video")
    receiver = TrackReceiver(info, publisher_params(777), upstream, 0.5, PublisherClock())
    layer = receiver.layers[0]
    layer.request_keyframe(time.monotonic())
    layer.request_keyframe(time.monotonic())  # throttled: a timer is armed
    assert upstream.requests == [777]
    gone = weakref.ref(upstream)
    receiver.close()
    del upstream, receiver, layer
    gc.collect()
    assert gone() is None
