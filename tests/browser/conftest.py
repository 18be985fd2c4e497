"""Browser fixtures: real headless Chromium, driven by playwright, against the real server.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``scripts/install-system-deps``);
playwright only drives it (``playwright install`` is never needed). The server is started as in
tests/e2e. Each test runs in a network namespace of its own that has only a loopback interface
(see netns.py), so the server, Chromium and any Python client talk over 127.0.0.1 and nothing else.

Without Chromium or without the right to make a network namespace (not root), the tests are
skipped, except on CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.async_api import Browser as Chromium
from playwright.async_api import Page, async_playwright

from tests.browser.netns import loopback_only_network
from tests.e2e.conftest import SfuServer, _start_server, _stop_server, make_client

__all__ = ["make_client"]  # the e2e fixture: Python clients in the same room

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = Path(os.environ.get("AIOSFU_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    # a synthetic camera (a moving test pattern) and microphone (beeps), granted without asking
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    # without it Chromium gathers no candidate on 127.0.0.1
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--no-pings",
    "--metrics-recording-only",
]
# small capture, so that three pages, the server and their encoders fit on two cores
CAPTURE = {"video": "320x180", "fps": "15"}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def loopback_only() -> Iterator[None]:
    """This test's server, browser and clients live in a network namespace with only lo."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (run scripts/install-system-deps as root)")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(loopback_only_network())
        except OSError as exc:
            _unavailable(f"cannot make a loopback-only network namespace (needs root): {exc}")
        yield


@pytest.fixture
def server_env() -> dict[str, str]:
    """Server options as environment variables (e.g. ``SFU_RESUME_WINDOW``); parametrize it."""
    return {}


@pytest.fixture
def sfu_server(
    loopback_only: None,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    server_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SfuServer]:
    """A fresh server inside this test's namespace (``AIOSFU_E2E_URL`` is not used here)."""
    for name, value in server_env.items():
        monkeypatch.setenv(name, value)
    server = _start_server(tmp_path)
    request.node.sfu_server = server
    try:
        yield server
    finally:
        _stop_server(server)


@pytest.fixture
def room() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


@dataclass
class PageLog:
    """What a page printed, for the report of a failed test."""

    name: str
    lines: list[str] = field(default_factory=list)
    #: uncaught exceptions, and what the page's SfuClient reported (its log lines start "[sfu]")
    problems: list[str] = field(default_factory=list)

    def console(self, kind: str, text: str) -> None:
        self.lines.append(f"{kind}: {text}")
        if text.startswith("[sfu]") or kind == "pageerror":
            self.problems.append(text)


@dataclass
class Browser:
    """One Chromium; each participant gets a context (its own profile, devices and page)."""

    chromium: Chromium
    server: SfuServer
    logs: list[PageLog] = field(default_factory=list)

    def url(self, **query: str) -> str:
        return f"{self.server.url}/?{urlencode(query)}" if query else f"{self.server.url}/"

    async def new_page(self, name: str = "") -> Page:
        context = await self.chromium.new_context(viewport={"width": 960, "height": 600})
        page = await context.new_page()
        log = PageLog(name or f"page {len(self.logs) + 1}")
        self.logs.append(log)
        page.on("console", lambda m: log.console(m.type, m.text))
        page.on("pageerror", lambda e: log.console("pageerror", str(e)))
        return page

    def assert_no_page_errors(self) -> None:
        problems = {log.name: log.problems for log in self.logs if log.problems}
        assert not problems, f"the pages reported problems: {problems}"

    async def join(self, room: str, name: str, **options: str) -> Page:
        """A page that joined ``room`` as ``name`` and published its camera and microphone."""
        page = await self.new_page(name)
        await page.goto(self.url(room=room, name=name, autojoin="1", **CAPTURE, **options))
        await wait_joined(page)
        return page


async def wait_joined(page: Page, timeout: float = 20.0) -> None:  # noqa: ASYNC109
    await page.wait_for_function(
        "() => { const a = window.sfuApp; return a && a.client && a.client.participantId"
        " && a.local.mic && a.local.mic.trackId && a.local.camera && a.local.camera.trackId; }",
        timeout=timeout * 1000,
    )


@pytest.fixture
async def browser(sfu_server: SfuServer, request: pytest.FixtureRequest) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        wrapper = Browser(chromium, sfu_server)
        request.node.browser_logs = wrapper.logs
        try:
            yield wrapper
        finally:
            await chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        server = getattr(item, "sfu_server", None)
        if isinstance(server, SfuServer):
            report.sections.append(("sfu server logs", server.logs()))
        for log in getattr(item, "browser_logs", []):
            report.sections.append((f"browser console: {log.name}", "\n".join(log.lines[-200:])))
        firefox = getattr(item, "firefox", None)  # tests/browser/firefox.py
        if firefox is not None:
            report.sections.append(("firefox console", "\n".join(firefox.console()[-200:])))
    return report
