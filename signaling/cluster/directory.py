"""The room directory of several nodes, in Redis (issue 13, docs/design/scale-out-plan.md §4).

Each node keeps ``{prefix}node:{id}`` alive (a JSON description, set every :data:`HEARTBEAT`
with a :data:`NODE_TTL` expiry, listed in the ``{prefix}nodes`` sorted set), and each room it
hosts claimed as ``{prefix}room:{room}`` = its id (:data:`ROOM_TTL`, refreshed every
:data:`ROOM_REFRESH` while it is the owner). A claim is one Lua script, atomic in Redis: the
room's owner stays the owner while its node key lives; otherwise the room goes to the candidate
(the least loaded live node, chosen by the caller's side). So two nodes that claim one room at
once get one answer, and a dead node's rooms are taken over once its key expired — never before.
A release deletes the claim only if it is still ours.

Redis is not on the media or the signaling path: while it is away, calls go on, and only a claim
(a new room) fails, with :class:`DirectoryUnavailable`. The directory reconnects with backoff; a
restarted Redis (a new ``run_id``) lost its keys: the node registers again, asserts its claims
again with ``SET NX`` (a conflict is counted: someone claimed meanwhile), and makes no claim for
:data:`QUIET_AFTER_RESTART` seconds, so that every owner asserts before anyone takes a room over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as redis
import structlog
from redis.exceptions import RedisError

from signaling.placement import Placement

log = structlog.get_logger("signaling.cluster")

#: Seconds between heartbeats, and how long a node key outlives its last one.
HEARTBEAT = 1.0
NODE_TTL = 3.0
#: A room's claim expires after this long without its owner's refresh, refreshed this often.
ROOM_TTL = 60.0
ROOM_REFRESH = 20.0
#: After Redis restarted, no claim for this long: the owners assert their rooms again first.
QUIET_AFTER_RESTART = 3.0
#: How long a claim waits for Redis (s) before the join is refused.
CLAIM_TIMEOUT = 2.0
RECONNECT_FIRST, RECONNECT_LONGEST = 0.1, 2.0

# KEYS[1] the room's key; ARGV: candidate, ttl (ms), node key prefix. {owner, 0} while its
# node key exists, else {candidate, 1}: placed now (Redis runs a script atomically).
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner and redis.call('EXISTS', ARGV[3] .. owner) == 1 then
  return {owner, 0}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {ARGV[1], 1}
"""
# KEYS[1] the room's key; ARGV[1] us; ARGV[2] ttl (ms, 0: delete). Only while it is ours.
_IF_OURS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '0' then
  return redis.call('DEL', KEYS[1])
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


class DirectoryUnavailable(Exception):
    """Redis cannot be reached (or was just restarted): no room can be claimed now."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as the others see it (its node key's value)."""

    node_id: str
    ws: str  # the signaling URL clients may use
    link: str  # host:port of its node link
    cpu: float = 0.0
    packets_out: float = 0.0
    rooms: int = 0
    draining: bool = False


class Directory:
    """This node's view of the cluster's rooms (see the module docstring)."""

    def __init__(
        self,
        url: str,
        describe: Callable[[], NodeInfo],
        *,
        prefix: str = "sfu:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis: redis.Redis = redis.from_url(
            url, socket_timeout=CLAIM_TIMEOUT, socket_connect_timeout=CLAIM_TIMEOUT
        )
        self._describe = describe
        self.node_id = describe().node_id
        self._prefix = prefix
        self._clock = clock
        #: the least loaded node for a new room, this node's recent choices weighed
        self._placement: Placement[str] = Placement()
        self._claim = self._redis.register_script(_CLAIM)
        self._if_ours = self._redis.register_script(_IF_OURS)
        self.claims: set[str] = set()  # rooms this node owns
        self.up = False
        self.conflicts = 0  # claims found taken when asserted again after a restart
        self._run_id: str | None = None
        self._quiet_until = 0.0
        self._task: asyncio.Task[None] | None = None

    def _node_key(self, node_id: str) -> str:
        return f"{self._prefix}node:{node_id}"

    def _room_key(self, room: str) -> str:
        return f"{self._prefix}room:{room}"

    async def start(self) -> None:
        """Register, and keep registering (a Redis away now is retried in the background)."""
        try:
            await self._beat()
        except (RedisError, OSError) as exc:
            # said once here: the retries say nothing until Redis has been up (see _run)
            log.warning("room directory unavailable at start: retrying", error=str(exc))
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        wait, refreshed = RECONNECT_FIRST, self._clock()
        while True:
            await asyncio.sleep(HEARTBEAT if self.up else wait)
            try:
                await self._beat()
                wait = RECONNECT_FIRST
                if self._clock() - refreshed >= ROOM_REFRESH:
                    await self._refresh_claims()
                    refreshed = self._clock()
            except (RedisError, OSError) as exc:
                if self.up:
                    log.warning("room directory unavailable", error=str(exc))
                self.up = False
                wait = min(wait * 2, RECONNECT_LONGEST)

    async def announce(self) -> None:
        """Publish this node's description now, not at the next heartbeat (it began to drain:
        the others' placement must skip it at once). Redis away: the heartbeat does it later."""
        with contextlib.suppress(RedisError, OSError):
            await self._beat()

    async def _beat(self) -> None:
        """The heartbeat: the node key, and a restarted Redis noticed."""
        await self._same_redis()
        node = self._describe()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._node_key(self.node_id), json.dumps(asdict(node)), px=_ms(NODE_TTL))
            pipe.zadd(f"{self._prefix}nodes", {self.node_id: node.cpu})
            await pipe.execute()
        if not self.up:
            log.info("room directory up", node=self.node_id)
        self.up = True

    async def _same_redis(self) -> None:
        """Notice a restarted Redis (a new ``run_id``: its keys are gone): assert our claims
        again, and make none for QUIET_AFTER_RESTART, so the other owners assert theirs first.
        Asked by the heartbeat and before every claim, whichever comes first after a restart."""
        info: dict[str, Any] = await self._redis.info("server")
        run_id = str(info.get("run_id"))
        if self._run_id is not None and run_id != self._run_id:
            self._quiet_until = self._clock() + QUIET_AFTER_RESTART
            log.warning("room directory restarted: claims asserted again", rooms=len(self.claims))
            self._run_id = run_id
            await self._assert_claims()
        self._run_id = run_id

    async def _assert_claims(self) -> None:
        rooms = sorted(self.claims)
        async with self._redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.set(self._room_key(room), self.node_id, px=_ms(ROOM_TTL), nx=True)
            results = await pipe.execute()
        for room, ok in zip(rooms, results, strict=True):
            if not ok:
                self.conflicts += 1
                log.error("room claimed elsewhere while the directory restarted", room=room)

    async def _refresh_claims(self) -> None:
        rooms = sorted(self.claims)
        async with self._redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                await self._if_ours(
                    keys=[self._room_key(room)], args=[self.node_id, _ms(ROOM_TTL)], client=pipe
                )
            results = await pipe.execute()
        for room, refreshed in zip(rooms, results, strict=True):
            if not refreshed:
                self.claims.discard(room)  # expired and taken: not ours to refresh
                log.error("room claim lost", room=room)

    async def nodes(self) -> list[NodeInfo]:
        """The live nodes (those whose key exists); stale members of the set are removed."""
        members: list[Any] = await self._redis.zrange(f"{self._prefix}nodes", 0, -1)
        ids = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        if not ids:
            return []
        values = await self._redis.mget([self._node_key(i) for i in ids])
        live, stale = [], []
        for node_id, value in zip(ids, values, strict=True):
            if value is None:
                stale.append(node_id)
                continue
            with contextlib.suppress(ValueError, TypeError):
                live.append(NodeInfo(**json.loads(value)))
        if stale:
            await self._redis.zrem(f"{self._prefix}nodes", *stale)
        return live

    async def claim(self, room: str) -> str:
        """The node that hosts ``room``: its owner while that node lives, else the least loaded
        live node (this one included), which now owns it. :class:`DirectoryUnavailable` when
        Redis cannot answer within :data:`CLAIM_TIMEOUT`."""
        try:
            async with asyncio.timeout(CLAIM_TIMEOUT + QUIET_AFTER_RESTART):
                if not self.up:
                    raise DirectoryUnavailable("the room directory is unavailable")
                await self._same_redis()
                wait = self._quiet_until - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                candidates = [n for n in await self.nodes() if not n.draining]
                me = self._describe()
                if not me.draining and all(n.node_id != me.node_id for n in candidates):
                    candidates.append(me)
                if not candidates:
                    raise DirectoryUnavailable("no node can take a room now")
                loads = [(n.node_id, n.cpu, n.packets_out) for n in candidates]
                best = self._placement.among(loads, self._clock(), record=False)
                assert best is not None  # there are candidates
                owner, placed = await self._claim(
                    keys=[self._room_key(room)], args=[best, _ms(ROOM_TTL), self._node_key("")]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            raise DirectoryUnavailable(f"the room directory is unavailable: {exc}") from None
        owner_id = owner.decode() if isinstance(owner, bytes) else str(owner)
        if placed:
            self._placement.placed(owner_id, self._clock())
        if owner_id == self.node_id:
            self.claims.add(room)
        return owner_id

    def owned(self, room: str) -> None:
        """This node hosts ``room`` (it was claimed for it by another node's join)."""
        self.claims.add(room)

    async def release(self, room: str) -> bool:
        """The room emptied here: its claim goes, if it is still ours."""
        self.claims.discard(room)
        try:
            deleted = await self._if_ours(keys=[self._room_key(room)], args=[self.node_id, 0])
        except (RedisError, OSError) as exc:
            log.warning("room claim not released: it expires", room=room, error=str(exc))
            return False
        return bool(deleted)

    async def close(self) -> None:
        """Leave the cluster: the node key and this node's claims go."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            for room in sorted(self.claims):
                await self.release(room)
            await self._redis.delete(self._node_key(self.node_id))
            await self._redis.zrem(f"{self._prefix}nodes", self.node_id)
        await self._redis.aclose()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
