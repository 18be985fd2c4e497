"""A node's room service in a cluster (issue 13, docs/design/scale-out-plan.md §4).

:class:`ClusterRouter` is what the signaling of a node calls: a join asks the directory which
node owns the room (claiming it for the least loaded live node if none does) and goes to this
node's own room service, or through a node link to the owner's. The owner checks again that the
room is its own (:meth:`ClusterRouter.serve_link`'s ``join``): a claim can expire and be taken
while a relayed join is on its way, and a join that reaches a node no longer the owner gets
``wrong-node``, upon which the entry node asks the directory again (at most
:data:`ATTEMPTS` times); an owner that cannot be reached (its node died) is asked about again
until its claim expires (at most :data:`DEAD_OWNER_WAIT`). A node releases a room's claim when
its last session here ends.

While the directory is unavailable (Redis away or just restarted), a join for a room this node
already knows the owner of — it hosts the room, or relays sessions of it — goes to that owner:
nobody can take a room over without the directory, so the owner it knew is still the owner. Only
a join for a room unknown here is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import structlog

from sfu import api
from signaling.cluster.directory import Directory, DirectoryUnavailable
from signaling.cluster.links import NodeLinks
from signaling.rooms import JoinGate, join_counted

log = structlog.get_logger("signaling.cluster")

ATTEMPTS = 3
WRONG_NODE = "wrong-node"
#: A join for a room whose owner cannot be reached asks the directory again this often (s), for
#: at most this long: a dead node's claim goes when its key expires (NODE_TTL, 3 s).
DEAD_OWNER_POLL = 0.25
DEAD_OWNER_WAIT = 4.0


class WrongNode(api.SfuError):
    """A relayed join reached a node that does not own the room (any more)."""

    code = WRONG_NODE


class ClusterRouter:
    """This node's :class:`~sfu.api.RoomService` as its WebSockets see it."""

    def __init__(self, local: api.RoomService, directory: Directory, links: NodeLinks) -> None:
        self._local, self._directory, self._links = local, directory, links
        self.node_id = directory.node_id
        self._sessions: dict[str, int] = {}  # per room hosted here: sessions live or joining
        #: per room hosted elsewhere: its owner(s) -> sessions relayed there, live or joining
        self._relayed: dict[str, dict[str, int]] = {}
        self._releases: set[asyncio.Task[bool]] = set()

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
        attempts, deadline = 0, time.monotonic() + DEAD_OWNER_WAIT
        while True:
            owner = await self._owner(room_id)
            if owner == self.node_id:
                return await self.join_here(
                    room_id, name, listener, auto_subscribe, identity=identity, grants=grants
                )
            try:
                service = await self._links.service(owner)
            except api.SfuError:
                # its node died: its claim holds until its key expires (the directory's
                # NODE_TTL), then the room is taken over here or elsewhere
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(DEAD_OWNER_POLL)
                continue
            try:
                return await self._join_relayed(
                    service, owner, room_id, name, listener, auto_subscribe, identity, grants
                )
            except api.SfuError as exc:
                attempts += 1
                if exc.code != WRONG_NODE or attempts >= ATTEMPTS:
                    raise
                log.info("room moved while a join was relayed: asking again", room=room_id)

    async def _owner(self, room_id: str) -> str:
        try:
            return await self._directory.claim(room_id)
        except DirectoryUnavailable as exc:
            known = self._known_owner(room_id)
            if known is None:
                raise api.SfuError(f"{exc}: try again shortly") from None
            log.info("room directory unavailable: the room's known owner", room=room_id)
            return known

    def _known_owner(self, room_id: str) -> str | None:
        """The room's owner as this node's own sessions know it (None: no session of it here)."""
        if room_id in self._sessions:
            return self.node_id
        owners = self._relayed.get(room_id)
        return next(reversed(owners)) if owners else None  # the latest, if the room moved

    async def _join_relayed(
        self,
        service: api.RoomService,
        owner: str,
        room_id: str,
        name: str,
        listener: api.EventListener,
        auto_subscribe: bool,
        identity: str | None,
        grants: api.Grants,
    ) -> tuple[api.ParticipantSession, tuple[api.ParticipantInfo, ...]]:
        """A join relayed to the room's owner, counted while its session lives (see
        :meth:`_known_owner`)."""
        owners = self._relayed.setdefault(room_id, {})
        owners[owner] = owners.pop(owner, 0) + 1

        def ended() -> None:
            counts = self._relayed.get(room_id, {})
            left = counts.get(owner, 1) - 1
            if left > 0:
                counts[owner] = left
                return
            counts.pop(owner, None)
            if not counts:
                self._relayed.pop(room_id, None)

        return await join_counted(
            service, ended, room_id, name, listener, auto_subscribe, identity, grants
        )

    async def join_here(
        self,
        room_id: str,
        name: str,
        listener: api.EventListener,
        auto_subscribe: bool = True,
        *,
        identity: str | None = None,
        grants: api.Grants = api.FULL_GRANTS,
    ) -> tuple[api.ParticipantSession, tuple[api.ParticipantInfo, ...]]:
        """A join for a room this node owns (from its own WebSockets or a link)."""
        self._directory.owned(room_id)
        self._sessions[room_id] = self._sessions.get(room_id, 0) + 1

        def ended() -> None:
            left = self._sessions[room_id] = self._sessions.get(room_id, 1) - 1
            if left <= 0:
                del self._sessions[room_id]
                self._release(room_id)

        return await join_counted(
            self._local, ended, room_id, name, listener, auto_subscribe, identity, grants
        )

    def _release(self, room_id: str) -> None:
        task = asyncio.ensure_future(self._directory.release(room_id))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def serve_link(self) -> api.RoomService:
        """What this node serves to the others' links: its own rooms, a join only for a room
        it owns."""
        return _OwnedRooms(self)

    # --- the operator's: this node's rooms ---

    async def stats(self) -> Mapping[str, int]:
        return await self._local.stats()

    async def rooms(self) -> tuple[api.RoomSummary, ...]:
        return await self._local.rooms()

    async def room_participants(self, room_id: str) -> tuple[api.ParticipantDetails, ...]:
        return await self._local.room_participants(room_id)

    async def remove_participant(self, room_id: str, participant_id: str) -> None:
        await self._local.remove_participant(room_id, participant_id)

    async def mute_track(self, room_id: str, track_id: str, muted: bool) -> api.TrackInfo:
        return await self._local.mute_track(room_id, track_id, muted)

    async def close_room(self, room_id: str) -> None:
        await self._local.close_room(room_id)

    async def close(self, reason: str = "server-shutdown") -> None:
        await self._local.close(reason)


class _OwnedRooms(JoinGate):
    """The router as a link serves it: joins stay here, or are refused as ``wrong-node``; the
    rest is this node's own."""

    def __init__(self, router: ClusterRouter) -> None:
        super().__init__(router)
        self._router = router

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
        router = self._router
        if await router._owner(room_id) != router.node_id:
            raise WrongNode(f"room {room_id!r} is not on node {router.node_id!r}")
        return await router.join_here(
            room_id, name, listener, auto_subscribe, identity=identity, grants=grants
        )
