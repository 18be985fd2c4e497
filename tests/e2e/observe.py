"""What end-to-end tests read off a running call: a condition coming true, a server metric."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import aiohttp

from .conftest import SfuServer

TIMEOUT = 20.0


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:  # noqa: ASYNC109
    """Poll ``predicate`` every 50 ms; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def metric(server: SfuServer, name: str) -> float:
    """The value of one unlabelled sample of ``/metrics``."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.url.rstrip("/") + "/metrics") as response,
    ):
        text = await response.text()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))
