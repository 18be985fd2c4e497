"""The server forwards RTP: it never creates a decoder or an encoder, nor a thread per track.

The server runs under tests/e2e/guarded_server.py, which makes every aiortc codec constructor
print a marker and fail. A three-party call must still deliver every stream.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sfu_client import PALETTE, TONES, FrameProbe, MarkerVideoTrack, SfuClient, ToneAudioTrack

from .conftest import ClientFactory, SfuServer
from .guarded_server import MARKER

pytestmark = pytest.mark.e2e

TIMEOUT = 20.0


@pytest.fixture
def server_module() -> str:
    return "tests.e2e.guarded_server"


def server_threads(server: SfuServer) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


async def decode(receiver: SfuClient, sender: SfuClient, kind: str) -> FrameProbe:
    assert sender.participant_id is not None
    remote = await receiver.wait_for_track(sender.participant_id, kind, TIMEOUT)  # type: ignore[arg-type]
    probe = FrameProbe(remote.track)
    await probe.run(count=5, timeout=TIMEOUT)
    return probe


async def test_three_party_call_without_any_codec_on_the_server(
    sfu_server: SfuServer, make_client: ClientFactory, room: str
) -> None:
    threads_idle = server_threads(sfu_server)
    clients = [await make_client(room, f"p{i}") for i in range(3)]
    await asyncio.gather(
        *(
            c.publish_many(
                [
                    (MarkerVideoTrack(PALETTE[i], 160, 120, 15), "camera"),
                    (ToneAudioTrack(TONES[i]), "microphone"),
                ]
            )
            for i, c in enumerate(clients)
        )
    )
    probes = await asyncio.gather(
        *(
            decode(receiver, sender, kind)
            for receiver in clients
            for sender in clients
            if sender is not receiver
            for kind in ("video", "audio")
        )
    )
    assert all(len(p.records) == 5 for p in probes)
    threads_busy = server_threads(sfu_server)
    stderr = sfu_server.stderr_path.read_text() if sfu_server.stderr_path else ""
    assert "guarded:" in stderr and "Vp8Decoder" in stderr, "the guard did not run"
    assert MARKER not in stderr, stderr[stderr.index(MARKER) :][:2000]
    # stock aiortc starts a decoder thread per received track (6 here); the SFU starts none
    print(f"server threads: {threads_idle} idle, {threads_busy} with 3 participants x 2 tracks")
    assert threads_busy <= threads_idle + 2
