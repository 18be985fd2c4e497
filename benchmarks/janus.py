"""A minimal client of the Janus WebSocket API and the VideoRoom plugin, and Janus's config.

API flow (Janus 1.1.2): ``create`` → session; ``attach`` janus.plugin.videoroom → handle; plugin
``message`` requests are acknowledged (``ack``) and answered by an ``event`` with the same
transaction, synchronous ones (``create`` a room) by ``success``. A keepalive every 20 s keeps the
session (``session_timeout`` is 60 s in the testbed config).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

PLUGIN = "janus.plugin.videoroom"
SUBPROTOCOL = "janus-protocol"
KEEPALIVE_INTERVAL = 20.0
#: The testbed's videoroom config sets this key; creating rooms through the API needs it.
ADMIN_KEY = "supersecret"
ETC_PLACEHOLDER = "@JANUS_ETC@"


class JanusError(Exception):
    pass


def write_config(source: Path, target: Path, event_loops: int | None) -> Path:
    """Copy the testbed's Janus configs into ``target`` with ``@JANUS_ETC@`` filled in.

    ``event_loops``: None keeps Janus's default threading (a loop thread per handle); a number
    makes Janus share that many loops among all handles. Returns the core config's path.
    """
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.jcfg")):
        text = path.read_text().replace(ETC_PLACEHOLDER, str(target))
        if path.name == "janus.jcfg" and event_loops is not None:
            text, count = re.subn(
                r"^general:\s*\{", f"general: {{\n\tevent_loops = {event_loops}", text, flags=re.M
            )
            if count != 1:
                raise ValueError(f"no general section in {path}")
        (target / path.name).write_text(text)
    core = target / "janus.jcfg"
    if not core.exists():
        raise FileNotFoundError(f"no janus.jcfg in {source}")
    return core


class JanusSession:
    """One Janus session over one WebSocket; plugin handles are plain integers."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self._ws = ws
        self._transactions = (f"t{n}" for n in itertools.count(1))
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self.session_id = 0
        self._reader = asyncio.create_task(self._read())
        self._keepalive: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str, timeout: float = 20.0) -> JanusSession:  # noqa: ASYNC109
        """Connect (retrying while Janus starts) and create a session."""
        http = aiohttp.ClientSession()
        deadline = time.monotonic() + timeout
        while True:
            try:
                ws = await http.ws_connect(url, protocols=(SUBPROTOCOL,), max_msg_size=0)
                break
            except (aiohttp.ClientError, OSError):
                if time.monotonic() > deadline:
                    await http.close()
                    raise
                await asyncio.sleep(0.2)
        session = cls(http, ws)
        reply = await session.request({"janus": "create"})
        session.session_id = int(reply["data"]["id"])
        session._keepalive = asyncio.create_task(session._keep_alive())
        return session

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            kind = data.get("janus")
            transaction = data.get("transaction")
            future = self._pending.pop(transaction, None) if kind != "ack" else None
            if future is not None:
                if not future.done():
                    future.set_result(data)
            elif kind != "ack" and "sender" in data:
                self._queue(int(data["sender"])).put_nowait(data)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(JanusError("the WebSocket closed"))

    def _queue(self, handle: int) -> asyncio.Queue[dict[str, Any]]:
        return self._events.setdefault(handle, asyncio.Queue())

    async def request(
        self,
        body: Mapping[str, Any],
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Send a Janus request; returns its ``success``/``event`` reply, raises on ``error``."""
        transaction = next(self._transactions)
        message = {**body, "transaction": transaction}
        if self.session_id:
            message["session_id"] = self.session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = future
        await self._ws.send_str(json.dumps(message))
        try:
            async with asyncio.timeout(timeout):
                reply = await future
        finally:
            self._pending.pop(transaction, None)
        if reply.get("janus") == "error":
            raise JanusError(f"{body.get('janus')}: {reply.get('error')}")
        return reply

    async def attach(self) -> int:
        reply = await self.request({"janus": "attach", "plugin": PLUGIN})
        handle = int(reply["data"]["id"])
        self._queue(handle)
        return handle

    async def message(
        self, handle: int, body: Mapping[str, Any], jsep: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A VideoRoom request; returns (plugin data, jsep or None), raises on a plugin error."""
        message: dict[str, Any] = {"janus": "message", "handle_id": handle, "body": dict(body)}
        if jsep is not None:
            message["jsep"] = dict(jsep)
        reply = await self.request(message)
        data: dict[str, Any] = reply.get("plugindata", {}).get("data", {})
        if "error" in data or "error_code" in data:
            raise JanusError(f"{body.get('request')}: {data.get('error')}")
        return data, reply.get("jsep")

    async def trickle_done(self, handle: int) -> None:
        message = {"janus": "trickle", "handle_id": handle, "candidate": {"completed": True}}
        await self._ws.send_str(
            json.dumps({**message, "session_id": self.session_id, "transaction": "trickle"})
        )

    async def wait_event(self, handle: int, kind: str, timeout: float = 20.0) -> None:  # noqa: ASYNC109
        """Wait for a core event (``webrtcup``, ``media``, …) on ``handle``."""
        queue = self._queue(handle)
        async with asyncio.timeout(timeout):
            while True:
                event = await queue.get()
                if event.get("janus") == kind:
                    return
                if event.get("janus") == "hangup":
                    raise JanusError(f"handle {handle} hung up: {event.get('reason')}")

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_INTERVAL)
            transaction = next(self._transactions)
            message = {"janus": "keepalive", "session_id": self.session_id}
            await self._ws.send_str(json.dumps({**message, "transaction": transaction}))

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.request({"janus": "destroy"}), 2.0)
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._http.close()
