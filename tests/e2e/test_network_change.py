"""A network change mid-call (issue 11): the client's address moves, and with it go its WebSocket
and its media sockets. The client resumes its signaling session on a new WebSocket and restarts
ICE on candidates of its new address; the call goes on with the same ids, and the others see no
leave. Real server and aiortc peers in two network namespaces (tests/e2e/shaped_link.py):

    namespace -sfu: the server and the publisher (over lo)
    namespace -sub: the mover, on 10.99.0.2 over the veth, then on 10.99.0.6

The time from the address change to the first frame decoded on each side is printed (run with
-s); the issue's target (< 2 s) is reported, not asserted.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu_client import PALETTE, FrameProbe, MarkerVideoTrack, SfuClient

from .shaped_link import (
    SERVER_ADDRESS,
    SERVER_IF,
    SUBSCRIBER_ADDRESS,
    SUBSCRIBER_IF,
    LinkUnavailable,
    ServerProcess,
    ShapedLink,
    _run,
    in_namespace,
)

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT, FPS = 160, 120, 15
MEDIA_TIMEOUT = 20.0
NEW_ADDRESS = "10.99.0.6"  # outside the old /30: routed by hand, as a new network would be


async def first_frame_after(receiver: SfuClient, sender: SfuClient, since: float) -> float:
    assert sender.participant_id is not None
    remote = await receiver.wait_for_track(sender.participant_id, "video", MEDIA_TIMEOUT)
    probe = FrameProbe(remote.track)
    deadline = time.monotonic() + MEDIA_TIMEOUT
    while time.monotonic() < deadline:
        await probe.run(count=len(probe.records) + 1, timeout=deadline - time.monotonic())
        fresh = [r.at for r in probe.records if r.at > since]
        if fresh:
            return fresh[0] - since
    raise AssertionError(f"{receiver.name} decoded no frame of {sender.name} after the change")


def move_address(link: ShapedLink) -> None:
    """The mover's address changes from SUBSCRIBER_ADDRESS to NEW_ADDRESS."""
    sub, sfu = link.subscriber_ns, link.server_ns
    _run("ip", "-n", sub, "addr", "del", f"{SUBSCRIBER_ADDRESS}/30", "dev", SUBSCRIBER_IF)
    _run("ip", "-n", sub, "addr", "add", f"{NEW_ADDRESS}/32", "dev", SUBSCRIBER_IF)
    _run("ip", "-n", sub, "route", "add", f"{SERVER_ADDRESS}/32", "dev", SUBSCRIBER_IF,
         "src", NEW_ADDRESS)  # fmt: skip
    _run("ip", "-n", sfu, "route", "add", f"{NEW_ADDRESS}/32", "dev", SERVER_IF)


@pytest.mark.parametrize(
    "server_args", [("--socket-per-participant",), ()], ids=["socket-per-participant", "udp-port"]
)
async def test_call_survives_an_address_change(
    tmp_path: object, server_args: tuple[str, ...]
) -> None:
    try:
        link = ShapedLink(f"nc{uuid.uuid4().hex[:6]}")
    except LinkUnavailable as exc:
        pytest.skip(str(exc))
    room = f"room-{uuid.uuid4().hex[:8]}"
    clients: list[SfuClient] = []
    with link:
        server = ServerProcess(link, tmp_path, *server_args)  # type: ignore[arg-type]
        try:
            with link.entered():
                set_ice_host_addresses(["127.0.0.1"])
                publisher = await SfuClient.connect(server.url(), room, "publisher")
                clients.append(publisher)
                await publisher.publish(MarkerVideoTrack(PALETTE[0], WIDTH, HEIGHT, FPS), "camera")
            # from here on, sockets this thread makes (the mover's) live in the other namespace
            with in_namespace(link.subscriber_ns):
                set_ice_host_addresses([SUBSCRIBER_ADDRESS])
                mover = await SfuClient.connect(server.url(SERVER_ADDRESS), room, "mover")
                clients.append(mover)
                await mover.publish(MarkerVideoTrack(PALETTE[1], WIDTH, HEIGHT, FPS), "camera")
                await first_frame_after(mover, publisher, time.monotonic())
                await first_frame_after(publisher, mover, time.monotonic())
                ids = (publisher.participant_id, mover.participant_id)

                move_address(link)
                changed_at = time.monotonic()
                set_ice_host_addresses([NEW_ADDRESS])
                took = await mover.network_changed()
                there, back = await asyncio.gather(
                    first_frame_after(publisher, mover, changed_at),
                    first_frame_after(mover, publisher, changed_at),
                )
                resumed = await mover.wait_for_message("reconnected", MEDIA_TIMEOUT)
                print(
                    f"address change -> ICE restarted {took:.2f} s, signaling resumed "
                    f"{resumed.at - changed_at:.2f} s, first frame mover->publisher "
                    f"{there:.2f} s, publisher->mover {back:.2f} s"
                )
                # and it keeps flowing (the old address and its sockets are gone: this is
                # the new path): 1.5 s at 15 fps
                for receiver, sender in ((publisher, mover), (mover, publisher)):
                    assert sender.participant_id is not None
                    remote = await receiver.wait_for_track(sender.participant_id, "video")
                    remote.drain()
                    probe = await FrameProbe(remote.track).run(duration=1.5, timeout=1.5)
                    print(f"  {sender.name}->{receiver.name}: {len(probe.records)} frames in 1.5 s")
                    assert len(probe.records) >= 10
                pair = mover.pc.getTransceivers()[0].receiver.transport.transport
                local = [c.ip for c in pair.iceGatherer.getLocalCandidates()]
                assert local == [NEW_ADDRESS]
                assert (publisher.participant_id, mover.participant_id) == ids
                assert mover.resumes == 1 and mover.ice_restarts == 1
                left = [m for m in publisher.history if m.type == "participant-left"]
                assert left == [] and mover.participant_id in publisher.participants
                assert publisher.errors == [] and mover.errors == []
        finally:
            with in_namespace(link.subscriber_ns):
                await asyncio.gather(*(c.close() for c in clients))
            set_ice_host_addresses([])
            server.stop()
