"""Real headless Firefox (Debian's ``firefox-esr``), driven over Marionette, for the browser tests.

Playwright cannot drive Debian's Firefox (it needs a patched build of its own); Marionette, the
remote protocol built into every Firefox, can, through PyPI's ``marionette-driver``. Firefox is
started by this module, inside the calling test's loopback-only network namespace (a child
process inherits the namespace of the thread that starts it, see netns.py): outside one it
offers every interface's address, and no pref restricts that.

One Firefox per test; each participant gets a window of its own (a window, not a tab: a
background tab is hidden, so adaptive stream would pause it and its timers are throttled).
``FirefoxPage.evaluate`` takes the same arrow-function source as playwright's
``page.evaluate``. Marionette's client blocks, so every call runs in a worker thread, one at a
time (the socket was opened in the namespace, so the thread it is used from does not matter).

What the pages print on the console, and their uncaught errors, go to Firefox's stdout
(``devtools.console.stdout.content``), kept in a file for the report of a failed test; as for
Chromium, lines of the page's SfuClient ("[sfu]") and uncaught errors count as problems.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marionette_driver.marionette import Marionette

FIREFOX = Path(os.environ.get("AIOSFU_FIREFOX", "/usr/bin/firefox-esr"))
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
SCRIPT_TIMEOUT_S = 30  # one evaluate() (the pages' scripts answer in milliseconds)
#: an address nothing listens on, for every URL Firefox would fetch by itself
NOWHERE = "http://127.0.0.1:9/"

PREFS: dict[str, bool | int | str] = {
    # Marionette on a port Firefox picks; it writes it to MarionetteActivePort in the profile
    "marionette.port": 0,
    # a synthetic camera and microphone, granted without asking
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    # without these two Firefox gathers only on the default route's address, which a
    # loopback-only namespace lacks: no candidate at all
    "permissions.default.camera": 1,
    "permissions.default.microphone": 1,
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,  # 127.0.0.1, not an mDNS name
    "media.peerconnection.default_iceservers": "[]",
    # its send-side estimate never below 2.5 Mbit/s (the pref is in kbit/s): starved for CPU on
    # a shared 2-core machine, Firefox's estimate fell and it dropped its top simulcast layer
    # for good; what these tests check is the server's layer switching, not Firefox's estimator
    "media.peerconnection.video.min_bitrate_estimate": 2500,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    # the console of the pages on stdout, for the test's report
    "devtools.console.stdout.content": True,
    # nothing fetched by Firefox itself: updates, telemetry, remote settings, the OpenH264
    # plugin, captive portal and connectivity checks, safe browsing, DNS over HTTPS
    "app.update.disabledForTesting": True,
    "app.update.auto": False,
    "app.update.url": NOWHERE,
    "app.normandy.enabled": False,
    "app.normandy.api_url": NOWHERE,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": NOWHERE,
    "services.settings.server": NOWHERE,
    "media.gmp-manager.url": NOWHERE,
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-gmpopenh264.enabled": False,
    "media.gmp-gmpopenh264.autoupdate": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "captivedetect.canonicalURL": NOWHERE,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.update.enabled": False,
    "network.trr.mode": 5,
    "network.proxy.type": 0,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "browser.search.update": False,
    "browser.region.network.url": NOWHERE,
    "geo.provider.network.url": NOWHERE,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.page": 0,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.firstRunURL": "",
    "browser.newtabpage.enabled": False,
    "browser.newtab.preload": False,
}

#: e.g. 'console.warn: "[sfu]" "a client offer failed" ...', 'JavaScript error: http://127.0.0.1:
#: 41234/sfu-client.js, line 3: TypeError: ...' (Firefox's own scripts are resource:// or chrome://)
_PROBLEM = re.compile(r'^(console\.\w+: "\[sfu\]"|JavaScript error: https?://)')


def firefox_missing() -> str | None:
    """Why Firefox cannot run here, or None."""
    if not FIREFOX.exists():
        return f"{FIREFOX} is missing (run scripts/install-system-deps as root)"
    return None


def write_profile(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        f"user_pref({json.dumps(name)}, {json.dumps(value)});" for name, value in PREFS.items()
    ]
    (directory / "user.js").write_text("\n".join(lines) + "\n")


@dataclass
class Firefox:
    """A running Firefox and its Marionette session."""

    process: subprocess.Popen[bytes]
    marionette: Marionette
    profile: Path
    stdout_path: Path
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _current: str | None = None
    _first_window: str | None = None

    async def call(self, window: str | None, what: str, *args: Any, **kwargs: Any) -> Any:
        """Run Marionette's ``what`` in ``window`` (switching to it first), in a thread."""
        async with self._lock:
            return await asyncio.to_thread(self._call, window, what, args, kwargs)

    def _call(self, window: str | None, what: str, args: Any, kwargs: Any) -> Any:
        if window is not None and window != self._current:
            self.marionette.switch_to_window(window)
            self._current = window
        return getattr(self.marionette, what)(*args, **kwargs)

    async def new_page(self, name: str) -> FirefoxPage:
        """A window of its own (the first page takes the window Firefox opened with)."""
        if self._first_window is not None:
            handle = self._first_window
            self._first_window = None
        else:
            opened = await self.call(None, "open", type="window", focus=False)
            handle = str(opened["handle"])
        return FirefoxPage(self, handle, name)

    def console(self) -> list[str]:
        """What Firefox printed: the pages' console (all windows together; a line does not say
        which), their uncaught errors, and Firefox's own messages."""
        return self.stdout_path.read_text(errors="replace").splitlines()

    def problems(self) -> list[str]:
        """What the pages' SfuClient reported (its lines start "[sfu]") and their uncaught errors
        (exceptions and rejected promises of the pages' own scripts)."""
        return [line for line in self.console() if _PROBLEM.match(line)]


@dataclass
class FirefoxPage:
    """One window of a Firefox: ``goto``, ``evaluate`` and ``wait_for_function`` as playwright's."""

    firefox: Firefox
    handle: str
    name: str

    async def goto(self, url: str) -> None:
        await self.firefox.call(self.handle, "navigate", url)

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        """Call the function ``expression`` (JavaScript source) with ``arg`` in the page; awaits
        a returned promise (as WebDriver's execute script does)."""
        script = f"return ({expression})(arguments[0]);"
        return await self.firefox.call(
            self.handle,
            "execute_script",
            script,
            script_args=[arg],
            sandbox=None,
            script_timeout=SCRIPT_TIMEOUT_S * 1000,
        )

    async def wait_for_function(self, expression: str, timeout: float) -> Any:  # noqa: ASYNC109
        """Poll ``expression`` until it returns something truthy (fails after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: still false after {timeout} s: {expression}")
            await asyncio.sleep(0.2)


def _active_port(profile: Path, process: subprocess.Popen[bytes], deadline: float) -> int:
    port_file = profile / "MarionetteActivePort"
    while time.monotonic() < deadline:
        if port_file.exists():
            text = port_file.read_text().strip()
            if text:
                return int(text)
        if process.poll() is not None:
            raise RuntimeError(
                f"firefox exited with {process.returncode} before Marionette listened"
            )
        time.sleep(0.1)
    raise RuntimeError(f"firefox's Marionette did not start within {START_TIMEOUT} s")


@contextlib.contextmanager
def running_firefox(workdir: Path) -> Iterator[Firefox]:
    """Start Firefox (in the calling thread's network namespace) and a Marionette session; quit
    it cleanly afterwards (killed if it does not exit in time)."""
    profile = workdir / "firefox-profile"
    shutil.rmtree(profile, ignore_errors=True)
    write_profile(profile)
    stdout_path = workdir / "firefox.stdout"
    command = [str(FIREFOX), "--headless", "--marionette", "--no-remote", "--profile", str(profile)]
    env = {**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1", "MOZ_HEADLESS": "1"}
    with stdout_path.open("wb") as out:
        process = subprocess.Popen(
            [*command, "about:blank"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        port = _active_port(profile, process, time.monotonic() + START_TIMEOUT)
        marionette = Marionette(host="127.0.0.1", port=port, socket_timeout=SCRIPT_TIMEOUT_S + 30)
        marionette.start_session(timeout=int(START_TIMEOUT))
        firefox = Firefox(process, marionette, profile, stdout_path)
        firefox._first_window = str(marionette.current_window_handle)
        firefox._current = firefox._first_window
        try:
            yield firefox
        finally:
            _quit(firefox)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def _quit(firefox: Firefox) -> None:
    # Marionette:Quit is what marionette-driver's quit() sends for the Firefoxes it starts
    # itself; this one was started here
    with contextlib.suppress(Exception):
        firefox.marionette._send_message("Marionette:Quit", {})
    with contextlib.suppress(Exception):
        firefox.marionette.delete_session(send_request=False)
    try:
        firefox.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        firefox.process.kill()
