"""``sfu serve --drain-timeout S``: SIGTERM during a call (issue 13, step S12), the real server.

After SIGTERM the server drains: ``/healthz`` says ``draining`` (503), a join that would open a
new room gets ``server-draining``, and the running call goes on until the drain timeout; then its
clients get ``bye server-shutdown`` and the process exits with 0. The drain ends sooner when the
last participant leaves, and at once on a second SIGTERM. Times are printed (``pytest -s``), not
asserted.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

import aiohttp
import pytest
from aiortc.mediastreams import MediaStreamError

from sfu_client import SfuClient
from sfu_client.client import ServerError
from tests.signaling.tone_calls import TIMEOUT, close_all, tone_call

from .conftest import STOP_TIMEOUT, SfuServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def server_args() -> tuple[str, ...]:
    return ("--drain-timeout", "2")


async def healthz(server: SfuServer) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as response:
        return response.status, await response.json()


async def until_draining(server: SfuServer) -> None:
    deadline = time.monotonic() + TIMEOUT
    while (await healthz(server))[1]["status"] != "draining":
        assert time.monotonic() < deadline, "/healthz never said draining"
        await asyncio.sleep(0.05)


def exit_code(server: SfuServer) -> int:
    """The process's exit code, awaited (bounded) in a thread; recorded for the fixture."""
    assert server.process is not None
    try:
        server.exit_code = server.process.wait(STOP_TIMEOUT + 30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not exit\n{server.logs()}", pytrace=False)
    return server.exit_code


async def count_frames(client: SfuClient) -> int:
    """Audio frames ``client`` decodes until its track ends (the server said bye)."""
    (remote,) = [r for r in client.remote_tracks.values() if r.active]
    remote.drain()
    count = 0
    while True:
        try:
            await asyncio.wait_for(remote.track.recv(), TIMEOUT)
        except MediaStreamError:
            return count
        count += 1


async def test_sigterm_drains_the_call_then_says_bye(sfu_server: SfuServer) -> None:
    assert sfu_server.process is not None
    url = sfu_server.ws_url
    clients: list[SfuClient] = []
    try:
        publisher, subscriber = await tone_call(url, "running", clients)
        frames = asyncio.ensure_future(count_frames(subscriber))
        signalled = time.monotonic()
        sfu_server.process.send_signal(signal.SIGTERM)
        await until_draining(sfu_server)
        assert (await healthz(sfu_server))[0] == 503
        with pytest.raises(ServerError) as refused:
            await SfuClient.connect(url, "another", "late")
        assert refused.value.code == "server-draining"
        refused_at = time.monotonic()
        assert not any(m.type == "bye" for c in clients for m in c.history)  # still in the call

        byes = [await c.wait_for_message("bye", TIMEOUT) for c in (publisher, subscriber)]
        assert [b.data["reason"] for b in byes] == ["server-shutdown"] * 2
        after = min(b.at for b in byes) - signalled
        received = await frames
        code = await asyncio.to_thread(exit_code, sfu_server)
        exited = time.monotonic() - signalled
        assert code == 0, sfu_server.logs()
        assert received > 0
        print(
            f"\nSIGTERM: server-draining refusal after {refused_at - signalled:.2f} s, bye after "
            f"{after:.2f} s (--drain-timeout 2), exit after {exited:.2f} s; the subscriber "
            f"decoded {received} audio frames meanwhile"
        )
    finally:
        await close_all(clients)


@pytest.mark.parametrize("server_args", [("--drain-timeout", "60")])
async def test_the_drain_ends_with_the_last_leave_or_a_second_sigterm(
    sfu_server: SfuServer,
) -> None:
    """The last participant's leave ends a long drain (exit 0 at once), as a second SIGTERM
    would; checked here with one call that leaves."""
    assert sfu_server.process is not None
    clients: list[SfuClient] = []
    try:
        await tone_call(sfu_server.ws_url, "running", clients)
        sfu_server.process.send_signal(signal.SIGTERM)
        await until_draining(sfu_server)
        left = time.monotonic()
        await asyncio.gather(*(c.leave() for c in clients))
        code = await asyncio.to_thread(exit_code, sfu_server)
        assert code == 0, sfu_server.logs()
        print(f"\nlast leave during a 60 s drain: exit {time.monotonic() - left:.2f} s later")
    finally:
        await close_all(clients)


@pytest.mark.parametrize("server_args", [("--drain-timeout", "60")])
async def test_a_second_sigterm_stops_the_drain(sfu_server: SfuServer) -> None:
    assert sfu_server.process is not None
    clients: list[SfuClient] = []
    try:
        publisher, subscriber = await tone_call(sfu_server.ws_url, "running", clients)
        sfu_server.process.send_signal(signal.SIGTERM)
        await until_draining(sfu_server)
        second = time.monotonic()
        sfu_server.process.send_signal(signal.SIGTERM)
        for client in (publisher, subscriber):
            bye = await client.wait_for_message("bye", TIMEOUT)
            assert bye.data["reason"] == "server-shutdown"
        code = await asyncio.to_thread(exit_code, sfu_server)
        assert code == 0, sfu_server.logs()
        print(f"\nsecond SIGTERM during a 60 s drain: exit {time.monotonic() - second:.2f} s later")
    finally:
        await close_all(clients)
