"""A participant whose media path dies while its WebSocket stays open is removed within 10 s."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sfu_client import PALETTE, FrameProbe, MarkerVideoTrack

from .conftest import ClientFactory

pytestmark = pytest.mark.e2e


@pytest.fixture(
    params=[("--socket-per-participant",), ()], ids=["socket-per-participant", "udp-port"]
)
def server_args(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """Both socket models: a socket per participant, and one shared port (the default)."""
    return request.param  # type: ignore[no-any-return]


async def test_silent_peer_is_removed_while_its_websocket_lives(
    make_client: ClientFactory, room: str
) -> None:
    victim = await make_client(room, "victim")
    witness = await make_client(room, "witness")
    await victim.publish(MarkerVideoTrack(PALETTE[0], 160, 120, 15), "camera")
    assert victim.participant_id is not None
    remote = await witness.wait_for_track(victim.participant_id, "video", 20.0)
    probe = FrameProbe(remote.track)
    await probe.run(count=2, timeout=20.0)
    assert probe.records, "media never flowed"

    # pull the network cable: close the victim's UDP sockets without any DTLS/ICE goodbye
    transport: Any = victim.pc.getTransceivers()[0].receiver.transport.transport
    for protocol in transport._connection._protocols:
        protocol.transport.close()
    cut_at = time.monotonic()

    message = await witness.wait_for_message(
        "participant-left", timeout=15.0, participantId=victim.participant_id
    )
    after = message.at - cut_at
    print(f"participant-left after {after:.1f} s, reason {message.data.get('reason')!r}")
    assert after < 10.0
    assert message.data.get("reason") in ("timeout", "ice-failed")
    bye = await victim.wait_for_message("bye")
    assert bye.data.get("reason") == message.data.get("reason")
