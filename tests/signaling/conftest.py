"""The end-to-end fixtures (a real server subprocess, clients on 127.0.0.1), for test_metrics."""

from tests.e2e.conftest import (  # noqa: F401 - fixtures, found by name
    make_client,
    pytest_runtest_makereport,
    room,
    server_args,
    server_module,
    sfu_server,
)
