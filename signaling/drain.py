"""Draining a node before it stops (issue 13, docs/design/scale-out-plan.md §3.7).

``sfu serve --drain-timeout S``: the first SIGTERM (or SIGINT) starts a :class:`Drain`. From then
on a ``join`` for a room this node serves no session of gets ``server-draining`` (a client with
several URLs tries the next), while a join for a room it serves still goes through: its
participants may join again, and resume as ever. The calls go on until the last session here
ends or the timeout passes, whichever comes first; then the server stops as without a drain.

:class:`DrainingRooms` is the gate in front of a room service: what the WebSockets see and, in a
cluster, what the node links serve. Both count into one :class:`Drain`, so a room "served here" is
one with a session joined or joining through either: hosted here, or relayed from here.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Literal

import structlog

from sfu import api
from signaling.rooms import JoinGate, Once, join_counted

log = structlog.get_logger("signaling.drain")

#: Why a drain ended.
DrainEnd = Literal["empty", "timeout", "interrupted"]


class Drain:
    """Whether this node drains, and the sessions it still serves, per room."""

    def __init__(self) -> None:
        self.draining = False
        self._sessions: Counter[str] = Counter()  # per room: sessions live or joining
        self._changed = asyncio.Event()
        self._hooks: list[Callable[[], Awaitable[object]]] = []

    def on_start(self, hook: Callable[[], Awaitable[object]]) -> None:
        """``hook`` runs when the drain starts (the workers, the directory are told)."""
        self._hooks.append(hook)

    async def start(self) -> None:
        if self.draining:
            return
        self.draining = True
        log.info("draining: no new room here", sessions=self.sessions, rooms=len(self._sessions))
        for hook in self._hooks:
            await hook()

    @property
    def sessions(self) -> int:
        return self._sessions.total()

    def admits(self, room_id: str) -> bool:
        """Whether a join for ``room_id`` may go on: always, unless draining; then only for a
        room with a session here."""
        return not self.draining or self._sessions[room_id] > 0

    def joining(self, room_id: str) -> Once:
        """A session of ``room_id`` begins; call what is returned when it ends (once)."""
        self._sessions[room_id] += 1

        def ended() -> None:
            self._sessions[room_id] -= 1
            if self._sessions[room_id] <= 0:
                del self._sessions[room_id]
            self._changed.set()

        return Once(ended)

    async def finish(self, timeout: float, interrupt: asyncio.Event | None = None) -> DrainEnd:  # noqa: ASYNC109
        """Wait, once draining, until no session is left here (``empty``), ``timeout`` seconds
        passed, or ``interrupt`` is set (a second signal)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.sessions:
            self._changed.clear()
            waits = [asyncio.ensure_future(self._changed.wait())]
            if interrupt is not None:
                waits.append(asyncio.ensure_future(interrupt.wait()))
            try:
                await asyncio.wait(
                    waits, timeout=max(0.0, deadline - loop.time()), return_when="FIRST_COMPLETED"
                )
            finally:
                for wait in waits:
                    wait.cancel()
            if interrupt is not None and interrupt.is_set():
                return "interrupted"
            if loop.time() >= deadline:
                return "timeout"
        return "empty"


class DrainingRooms(JoinGate):
    """A :class:`~sfu.api.RoomService` whose joins count into ``drain`` and, while it drains,
    are refused (``server-draining``) for a room with no session here; the rest as ``service``."""

    def __init__(self, service: api.RoomService, drain: Drain) -> None:
        super().__init__(service)
        self._service, self._drain = service, drain

    async def join(
        self,
        room_id: str,
        name: str,
        listener: api.EventListener,
        auto_subscribe: bool = True,
        *,
        identity: str | None = None,
        grants: api.Grants = api.FULL_GRANTS,
    ) -> tuple[api.ParticipantSession, tuple[api.ParticipantInfo, ...]]:
        if not self._drain.admits(room_id):
            raise api.ServerDraining(
                f"this server is stopping and opens no new room: join {room_id!r} elsewhere"
            )
        return await join_counted(
            self._service, self._drain.joining(room_id), room_id, name, listener,
            auto_subscribe, identity, grants,
        )  # fmt: skip
