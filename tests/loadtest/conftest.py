"""The end-to-end fixtures (a real server subprocess on 127.0.0.1; two cluster nodes and their
Redis), for the load-test smoke runs."""

from tests.cluster.conftest import (  # noqa: F401 - fixtures, found by name
    node_args,
    nodes,
    prefix,
    redis_server,
)
from tests.e2e.conftest import (  # noqa: F401 - fixtures, found by name
    pytest_runtest_makereport,
    server_args,
    server_module,
    sfu_server,
)
