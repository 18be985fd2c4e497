"""TURN for clients behind strict networks (docs/operations.md "TURN"; issue 12), with a real
coturn: a subscriber that can reach only coturn and the signaling, not the server's UDP ports,
receives video through a relay allocated with the credentials of ``joined`` — and, the controls,
does not without them or with credentials of a wrong secret. See harness.py for the network.

Without root or Debian's ``coturn`` the tests are skipped, except on CI (``CI`` set), where that
is a failure (as tests/browser/conftest.py does).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.shaped_link import LinkUnavailable, ShapedLink
from tests.e2e.turn.harness import Turnserver, call, subscribe, turn_testbed

pytestmark = pytest.mark.e2e

SECRET = "e2e-turn-secret-0f9c2b"
#: the subscriber's wait for a first frame: ample (through a relay on one machine: < 1 s)
WITHIN = 15.0
#: the controls' wait: past the server's connect timeout (6 s), so it has given up on them
CONTROL_WITHIN = 8.0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"TURN tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShapedLink, Turnserver]]:
    try:
        with turn_testbed(tmp_path_factory.mktemp("turn"), SECRET) as made:
            yield made
    except LinkUnavailable as exc:
        _unavailable(str(exc))


def test_a_client_that_reaches_only_turn_receives_video_through_a_relay(
    bed: tuple[ShapedLink, Turnserver], tmp_path: Path
) -> None:
    link, turn = bed
    env = {"SFU_TURN_SECRET": SECRET}
    with call(link, tmp_path, "relayed", env, "--turn-url", turn.url) as server:
        report = subscribe(link, server, "relayed", behind_turn=True, within=WITHIN)
        logs = server.logs()
    assert report["joinedIceServers"] == 1, report
    assert report["frame"] is not None, f"{report}\n{logs[-4000:]}\n{turn.logs()[-3000:]}"
    assert "relay" in report["gathered"], report
    assert report["selected"] is not None and report["selected"][0] == "relay", report
    assert SECRET not in logs  # the secret never reaches the logs
    assert turn.url in logs  # the servers it hands out do (the server says so at start)


def test_without_turn_servers_the_same_client_does_not_connect(
    bed: tuple[ShapedLink, Turnserver], tmp_path: Path
) -> None:
    link, _ = bed
    with call(link, tmp_path, "noturn", {}) as server:
        report = subscribe(link, server, "noturn", behind_turn=True, within=CONTROL_WITHIN)
        # next to the server the same call works: it is the network that keeps the first out
        direct = subscribe(link, server, "noturn", behind_turn=False, within=WITHIN)
    assert report["joinedIceServers"] == 0, report
    assert report["frame"] is None and report["selected"] is None, report
    assert "relay" not in report["gathered"], report
    assert direct["frame"] is not None and direct["selected"] == ["host", "host"], direct


def test_credentials_of_a_wrong_secret_get_no_relay_and_no_connection(
    bed: tuple[ShapedLink, Turnserver], tmp_path: Path
) -> None:
    link, turn = bed
    env = {"SFU_TURN_SECRET": "not-" + SECRET}
    with call(link, tmp_path, "wrongsecret", env, "--turn-url", turn.url) as server:
        report = subscribe(link, server, "wrongsecret", behind_turn=True, within=CONTROL_WITHIN)
    assert report["joinedIceServers"] == 1, report
    assert "relay" not in report["gathered"], report
    assert report["frame"] is None and report["selected"] is None, report
