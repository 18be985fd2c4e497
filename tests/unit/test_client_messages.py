"""The Python client's handling of server messages, fed in the order a server sends them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sfu_client import SfuClient


class SilentWebSocket:
    """A WebSocket on which nothing arrives until it is closed."""

    def __init__(self) -> None:
        self._closed = asyncio.Event()

    def __aiter__(self) -> SilentWebSocket:
        return self

    async def __anext__(self) -> Any:
        await self._closed.wait()
        raise StopAsyncIteration

    async def close(self) -> None:
        self._closed.set()


class NoSession:
    async def close(self) -> None:
        return None


async def test_events_right_after_joined_find_the_participants_it_listed() -> None:
    """The reader handles ``joined`` and the next events before join() resumes: a track
    published by someone ``joined`` listed must not be lost in between."""
    client = SfuClient(NoSession(), SilentWebSocket())  # type: ignore[arg-type]
    try:
        joined = {
            "type": "joined",
            "v": 1,
            "room": "r",
            "participantId": "PA_me",
            "participants": [{"participantId": "PA_bob", "name": "Bob", "tracks": []}],
        }
        published = {
            "type": "track-published",
            "track": {
                "trackId": "TR_1",
                "participantId": "PA_bob",
                "kind": "video",
                "source": "camera",
                "muted": False,
            },
        }
        for message in (joined, published):
            client._on_text(json.dumps(message))
        assert client.participant_id == "PA_me"
        assert set(client.participants["PA_bob"].tracks) == {"TR_1"}
    finally:
        await client.close()
