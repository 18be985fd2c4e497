"""Redis restarted under a call (issue 13, step S17), on loopback: two ``sfu serve --redis``
nodes on 127.0.0.2 and 127.0.0.3 and a Redis of the test's own on 127.0.0.1. The scenario
(tests/cluster/redis_restart.py, which test_netns_nodes.py runs in network namespaces too): a
room joined through both nodes; Redis SIGTERMed and started again ~2 s later, empty; every
client keeps receiving frames without a ``bye`` or a reconnection, one more joins meanwhile,
the nodes' keys and the room's claim come back, a room opened afterwards works. The largest
gap between two frames per client is printed (``pytest -s``), not asserted.
"""

from __future__ import annotations

import pytest

from tests.cluster.conftest import RedisServer
from tests.cluster.redis_restart import call_through_redis_restart
from tests.e2e.conftest import SfuServer

pytestmark = pytest.mark.e2e


async def test_a_call_goes_on_while_redis_restarts(
    nodes: list[SfuServer], redis_server: RedisServer
) -> None:
    try:
        await call_through_redis_restart(nodes, redis_server)
    except BaseException:
        for node in nodes:
            print(node.logs())
        raise
