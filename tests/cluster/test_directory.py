"""signaling/cluster/directory.py against a real redis-server (issue 13 step S15).

One owner among concurrent claims; a room taken over only once its owner's node key expired;
a release that deletes only its own claim; stale nodes left out; and a Redis restarted under the
nodes (every key lost): they register again, the owner asserts its claim again, and nobody takes
its room over in the meantime. TTLs are shortened through the module's constants.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from signaling.cluster import directory as module
from signaling.cluster.directory import Directory, DirectoryUnavailable, NodeInfo
from tests.cluster.conftest import RedisServer


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "HEARTBEAT", 0.1)
    monkeypatch.setattr(module, "NODE_TTL", 0.5)
    monkeypatch.setattr(module, "QUIET_AFTER_RESTART", 0.6)
    monkeypatch.setattr(module, "CLAIM_TIMEOUT", 1.0)


@pytest.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[Callable[..., Directory]]:
    made: list[Directory] = []

    def make(name: str, cpu: float = 0.0, draining: bool = False) -> Directory:
        info = NodeInfo(name, f"ws://{name}/ws", f"{name}:7100", cpu=cpu, draining=draining)
        directory = Directory(redis_server.url, lambda: info, prefix="t:")
        made.append(directory)
        return directory

    yield make
    for directory in made:
        await directory.close()


async def test_concurrent_claims_of_one_room_get_one_owner(
    nodes: Callable[..., Directory],
) -> None:
    directories = [nodes(f"n{i}", cpu=0.1 * i) for i in range(5)]
    for directory in directories:
        await directory.start()
    owners = await asyncio.gather(*(d.claim("room") for d in directories for _ in range(10)))
    assert set(owners) == {"n0"}  # the least loaded, whoever asked
    assert [d.claims for d in directories] == [{"room"}, set(), set(), set(), set()]


async def test_a_room_is_taken_over_only_once_its_owner_s_key_expired(
    nodes: Callable[..., Directory],
) -> None:
    a, b = nodes("a", cpu=0.0), nodes("b", cpu=0.5)
    await a.start()
    await b.start()
    assert await b.claim("room") == "a"
    assert a._task is not None
    a._task.cancel()  # a dies: no more heartbeats, its claim stays in Redis
    assert await b.claim("room") == "a"  # its node key has not expired yet
    await asyncio.sleep(module.NODE_TTL + 0.2)
    assert await b.claim("room") == "b"  # now it has: b takes the room over
    assert [n.node_id for n in await b.nodes()] == ["b"]  # and a is no longer listed


async def test_a_release_deletes_only_its_own_claim(nodes: Callable[..., Directory]) -> None:
    a, b = nodes("a", cpu=0.0), nodes("b", cpu=0.5)
    await a.start()
    await b.start()
    assert await a.claim("room") == "a"
    assert await b.release("room") is False  # not b's: untouched
    assert await b.claim("room") == "a"
    assert await a.release("room") is True
    assert a.claims == set()
    b_info = await b.nodes()
    assert {n.node_id for n in b_info} == {"a", "b"}
    assert await b.claim("room") == "a"  # free again: the least loaded takes it


async def test_a_draining_node_gets_no_new_room(nodes: Callable[..., Directory]) -> None:
    a, b = nodes("a", cpu=0.0, draining=True), nodes("b", cpu=0.9)
    await a.start()
    await b.start()
    assert await a.claim("room") == "b"


async def test_a_restarted_redis_gets_the_claims_back_and_nobody_takes_over_meanwhile(
    nodes: Callable[..., Directory], redis_server: RedisServer
) -> None:
    a, b = nodes("a", cpu=0.5), nodes("b", cpu=0.0)
    await a.start()
    assert await a.claim("room") == "a"  # alone: a owns it
    await b.start()
    redis_server.stop()
    with pytest.raises(DirectoryUnavailable):
        for _ in range(30):  # a claim while Redis is away is refused, not hung
            await b.claim("other")
            await asyncio.sleep(0.1)
    redis_server.start()  # empty: every key is gone
    # b, less loaded, would win an unowned room: it must wait for a to assert its claim again
    owner = None
    for _ in range(50):
        try:
            owner = await b.claim("room")
            break
        except DirectoryUnavailable:
            await asyncio.sleep(0.1)
    assert owner == "a"
    assert a.up and a.conflicts == 0 and a.claims == {"room"}
    assert {n.node_id for n in await b.nodes()} == {"a", "b"}


async def test_a_burst_of_new_rooms_is_spread_over_idle_nodes(
    nodes: Callable[..., Directory],
) -> None:
    """Idle nodes report the same load until the rooms' media shows in it a second later: a
    node weighs the rooms it placed itself meanwhile (signaling.placement), and a claim that
    found its room placed already counts for nothing."""
    a, b = nodes("a"), nodes("b")
    await a.start()
    await b.start()
    owners = [await a.claim(f"room{i}") for i in range(4)]
    assert sorted(owners) == ["a", "a", "b", "b"]
    assert [await a.claim("room0") for _ in range(5)] == [owners[0]] * 5
    assert await a.claim("room4") == "a"  # the repeats placed nothing: a's turn again
