"""signaling/drain.py in the app: a server that drains (issue 13, step S12), with the real
in-process ``Sfu`` and real aiortc clients over 127.0.0.1.

While it drains, a join that would open a new room is refused (``server-draining``) and a join to
a room that runs there is served; ``/healthz`` says ``draining`` (503); a client given two URLs
joins through the other server; the calls go on until the drain ends (its timeout, or the last
session gone), and stopping the server then says ``bye server-shutdown``. Times are printed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from sfu.config import MediaConfig
from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu.service import Sfu
from sfu_client import SfuClient
from sfu_client.client import ServerError, ws_url
from signaling.app import create_app
from signaling.drain import Drain
from tests.signaling.test_workers import frames_keep_coming
from tests.signaling.tone_calls import TIMEOUT, close_all, tone_call

CONFIG = MediaConfig(ice_hosts=("127.0.0.1",))


async def serve(drain: Drain) -> TestServer:
    server = TestServer(create_app(Sfu(CONFIG), resume_window=0, drain=drain), host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def clients() -> AsyncIterator[list[SfuClient]]:
    set_ice_host_addresses(["127.0.0.1"])
    made: list[SfuClient] = []
    try:
        yield made
    finally:
        await close_all(made)
        set_ice_host_addresses([])


async def healthz(server: TestServer) -> tuple[int, dict[str, Any]]:
    async with ClientSession() as http, http.get(server.make_url("/healthz")) as response:
        return response.status, await response.json()


async def raw_join(server: TestServer, room: str) -> dict[str, Any]:
    """The server's reply to a ``join`` on a WebSocket of its own."""
    async with ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await ws.send_str(json.dumps({"type": "join", "v": 1, "room": room, "name": "late"}))
        reply: dict[str, Any] = json.loads((await ws.receive(timeout=TIMEOUT)).data)
        return reply


async def test_draining_refuses_new_rooms_serves_running_ones_then_says_bye(
    clients: list[SfuClient],
) -> None:
    drain = Drain()
    server = await serve(drain)
    other = await serve(Drain())  # another server, not draining
    url, other_url = str(server.make_url("/ws")), str(other.make_url("/ws"))
    stopped = False
    try:
        _, subscriber = await tone_call(url, "running", clients)
        assert (await healthz(server))[0] == 200
        await drain.start()
        status, report = await healthz(server)
        assert (status, report["status"]) == (503, "draining")

        refused = await raw_join(server, "new")
        assert (refused["type"], refused["code"]) == ("error", "server-draining"), refused
        with pytest.raises(ServerError) as raised:
            await SfuClient.connect(url, "new", "alone")
        assert raised.value.code == "server-draining"
        # a room that runs here still admits (its participants may join again)
        late = await SfuClient.connect(url, "running", "late")
        clients.append(late)
        # a client given two URLs goes on to the one that is not draining
        moved = await SfuClient.connect([url, other_url], "new", "moved")
        clients.append(moved)
        assert moved.urls[0] == ws_url(other_url) and moved.participant_id is not None

        began = time.monotonic()
        counting = asyncio.ensure_future(frames_keep_coming(subscriber, 1.0))
        end = await drain.finish(1.5)
        frames = await counting
        assert end == "timeout" and frames > 10  # the call went on meanwhile
        print(f"\ndrain ended ({end}) after {time.monotonic() - began:.2f} s; {frames} frames")
        await server.close()
        stopped = True
        for client in (subscriber, late):
            bye = await client.wait_for_message("bye", TIMEOUT)
            assert bye.data["reason"] == "server-shutdown"
        assert not any(m.type == "bye" for m in moved.history)  # the other server goes on
    finally:
        await close_all(clients)
        if not stopped:
            await server.close()
        await other.close()


async def test_the_drain_ends_when_the_last_session_leaves(clients: list[SfuClient]) -> None:
    drain = Drain()
    server = await serve(drain)
    try:
        client = await SfuClient.connect(str(server.make_url("/ws")), "r", "ann")
        clients.append(client)
        await drain.start()
        assert drain.sessions == 1
        finishing = asyncio.ensure_future(drain.finish(TIMEOUT))
        await asyncio.sleep(0.2)
        assert not finishing.done()
        left = time.monotonic()
        await client.leave()
        assert await finishing == "empty"
        print(f"\ndrain over {time.monotonic() - left:.3f} s after the last leave")
        assert (await raw_join(server, "r"))["code"] == "server-draining"  # r is gone here
    finally:
        await server.close()


async def test_a_second_signal_ends_the_drain(clients: list[SfuClient]) -> None:
    drain = Drain()
    server = await serve(drain)
    try:
        clients.append(await SfuClient.connect(str(server.make_url("/ws")), "r", "ann"))
        await drain.start()
        interrupt = asyncio.Event()
        finishing = asyncio.ensure_future(drain.finish(TIMEOUT, interrupt))
        await asyncio.sleep(0.2)
        assert not finishing.done()
        interrupt.set()
        assert await finishing == "interrupted"
        assert drain.sessions == 1
    finally:
        await server.close()
