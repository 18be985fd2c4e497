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
        self.sent: list[dict[str, Any]] = []

    def __aiter__(self) -> SilentWebSocket:
        return self

    async def __anext__(self) -> Any:
        await self._closed.wait()
        raise StopAsyncIteration

    async def send_str(self, text: str) -> None:
        self.sent.append(json.loads(text))

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


async def test_publisher_layers_reach_the_hook() -> None:
    client = SfuClient(NoSession(), SilentWebSocket())  # type: ignore[arg-type]
    calls: list[tuple[str, dict[str, bool]]] = []
    message = {
        "type": "publisherLayers",
        "trackId": "TR_1",
        "layers": [{"rid": "q", "active": True}, {"rid": "f", "active": False}],
    }
    try:
        client._on_text(json.dumps(message))  # no hook set: nothing happens
        client.on_publisher_layers = lambda track_id, layers: calls.append((track_id, layers))
        client._on_text(json.dumps(message))
        assert calls == [("TR_1", {"q": True, "f": False})]

        def broken(track_id: str, layers: dict[str, bool]) -> None:
            raise RuntimeError("hook failed")

        # a failing hook is recorded; the client goes on reading
        client.on_publisher_layers = broken
        client._on_text(json.dumps(message))
        assert [str(e) for e in client.errors] == ["hook failed"]
        assert not client.closed
    finally:
        await client.close()


async def test_set_track_settings_sends_only_what_is_set() -> None:
    ws = SilentWebSocket()
    client = SfuClient(NoSession(), ws)  # type: ignore[arg-type]
    try:
        await client.set_track_settings(["TR_1", "TR_2"], max_width=640, max_height=360)
        await client.set_track_settings(["TR_1"], paused=True)
        await client.set_track_settings(["TR_1"], max_layer=0, max_temporal_layer=1)
        await client.set_track_settings(["TR_1"])
        assert ws.sent == [
            {
                "type": "setTrackSettings",
                "trackIds": ["TR_1", "TR_2"],
                "maxWidth": 640,
                "maxHeight": 360,
            },
            {"type": "setTrackSettings", "trackIds": ["TR_1"], "paused": True},
            {
                "type": "setTrackSettings",
                "trackIds": ["TR_1"],
                "maxLayer": 0,
                "maxTemporalLayer": 1,
            },
            {"type": "setTrackSettings", "trackIds": ["TR_1"]},
        ]
    finally:
        await client.close()
