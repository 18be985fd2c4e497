"""Small real calls for the signaling tests of rooms spread over room services: a publisher of a
tone and a subscriber that decodes it, real aiortc clients over 127.0.0.1."""

from __future__ import annotations

import asyncio

from sfu_client import SfuClient, ToneAudioTrack

TIMEOUT = 30.0


async def tone_call(url: str, room: str, clients: list[SfuClient]) -> tuple[SfuClient, SfuClient]:
    """(publisher, subscriber) in ``room``, once the subscriber decoded the publisher's audio;
    both added to ``clients``."""
    publisher = await SfuClient.connect(url, room, "pub")
    clients.append(publisher)
    await publisher.publish(ToneAudioTrack(440.0), source="microphone")
    subscriber = await SfuClient.connect(url, room, "sub")
    clients.append(subscriber)
    assert publisher.participant_id is not None
    remote = await subscriber.wait_for_track(publisher.participant_id, "audio", TIMEOUT)
    await asyncio.wait_for(remote.track.recv(), TIMEOUT)
    return publisher, subscriber


async def close_all(clients: list[SfuClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    for client in clients:
        for local in client.local_tracks.values():
            local.track.stop()
