"""ICE restart in real headless Chromium (issue 11), sfu-client.js's and the server's:

- the page's ``restartIce()``;
- the page's address changes: Chromium fires ``online`` and the page restarts ICE at once; or
  another network stays up, no ``online`` comes, and the page learns it from its connection
  ("disconnected"), its restart offer finding the WebSocket dead too;
- nothing reaches the page (the server still hears it): the page restarts ICE by itself;
- the page goes silent: the server offers it a restart, which the browser answers alone.

The page publishes its fake camera and microphone and receives a Python publisher's camera, so
media flows both ways. What the page sees is recorded in it: its client's events, its ICE
states, and every 20 ms the frames of the publisher's camera it decoded and the local address
of its selected candidate pair ("the path"). A restart brings a new path (new candidates are
new sockets); a frame on it is one decoded after the path changed, and the server has moved
too when its packets arrive on the new path alone.

All but the first put the page's Chromium in a namespace of its own behind a veth
(tests/e2e/shaped_link.py): the server, the publisher and their namespace on one side at
10.99.0.1, the page on 10.99.0.2 (moved to 10.99.0.6). The page is served from 10.99.0.1, which
Chromium takes for an insecure origin (no camera) unless told otherwise. UDP is cut on the veth
with an htb class that ends in a pfifo of no room (this kernel has neither netem nor gact).

Timings are printed (run with -s); the issue's target (media back < 2 s after an address
change) is reported, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.async_api import Page

from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu_client import PALETTE, FrameProbe, MarkerVideoTrack, SfuClient
from tests.browser.conftest import CAPTURE, CHROMIUM_FLAGS, Browser, PageLog, wait_joined
from tests.browser.conftest import _unavailable as unavailable
from tests.browser.pages import wait_flowing
from tests.browser.shaped_chromium import chromium_in
from tests.e2e.conftest import ClientFactory
from tests.e2e.shaped_link import (
    NICE,
    PREFIX,
    SERVER_ADDRESS,
    SERVER_IF,
    SUBSCRIBER_ADDRESS,
    SUBSCRIBER_IF,
    LinkUnavailable,
    ServerProcess,
    ShapedLink,
    _run,
    check_available,
)

pytestmark = pytest.mark.browser

WIDTH, HEIGHT, FPS = 160, 120, 15
PUBLISHER = "publisher"
NEW_ADDRESS = "10.99.0.6"  # outside the old /30, reached through a route of its own
OTHER_ADDRESS = "10.98.0.1"  # a network that stays up (routes nowhere)
TIMEOUT = 25.0  # generous: two cores run the server, Chromium and the Python client
SILENCE = 5.0  # the page's UDP dropped for longer than the server's 4 s before it restarts
MIN_PACKETS = 10  # a second of the publisher's video (15 frames/s)
BLACKOUT_LIMIT = 20.0  # for Chromium to say "disconnected" (7.5 s here) and the page to restart
CLOCK_SLACK = 0.1  # how far the page's event times, mapped onto ours (clock_offset), may be off

# the page's client's events, and (every 20 ms, when either changes) the frames of `name`'s
# camera it decoded and the local address:port of its selected candidate pair
_RECORD_JS = """
(name) => {
  const client = window.sfuApp.client;
  const log = (window.iceLog = { events: [], samples: [], offers: [], states: [] });
  for (const type of ["ice-restart", "reconnecting", "reconnected", "closed", "participant-left"]) {
    client.addEventListener(type, (e) => log.events.push({
      type, t: performance.now(), reason: e.detail.reason ?? null,
      attempt: e.detail.attempt ?? null, how: e.detail.how ?? null,
    }));
  }
  const ufrag = (d) => (/a=ice-ufrag:(\\S+)/.exec(d?.sdp ?? "") ?? [])[1] ?? null;
  // the ICE ufrag of each server offer the page was given (a new one: the server restarts ICE)
  client.pc.addEventListener("iceconnectionstatechange", () => {
    log.states.push({ t: performance.now(), state: client.pc.iceConnectionState });
  });
  client.pc.addEventListener("signalingstatechange", () => {
    const pc = client.pc;
    if (pc.signalingState === "have-remote-offer") {
      log.offers.push({ t: performance.now(), ufrag: ufrag(pc.pendingRemoteDescription) });
    }
  });
  const sample = async () => {
    if (client.closed) return;
    const participant = [...client.participants.values()].find((p) => p.name === name);
    const remote = participant && [...client.remoteTracks.values()].find(
      (r) => r.participantId === participant.participantId && r.source === "camera");
    const report = await client.pc.getStats();
    let frames = 0;
    let pairId = null;
    const local = new Map();
    const pairs = new Map();
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && remote && s.mid === remote.mid) frames = s.framesDecoded ?? 0;
      if (s.type === "transport") pairId = s.selectedCandidatePairId ?? null;
      if (s.type === "local-candidate") local.set(s.id, `${s.address}:${s.port}`);
      if (s.type === "candidate-pair") pairs.set(s.id, s.localCandidateId);
    });
    const path = local.get(pairs.get(pairId)) ?? null;
    const last = log.samples[log.samples.length - 1];
    if (!last || last.frames !== frames || last.path !== path) {
      log.samples.push({ t: performance.now(), frames, path });
    }
    setTimeout(sample, 20);
  };
  sample();
}
"""

# the page's ICE credentials and the server's, as their descriptions say
_ICE_JS = """
() => {
  const client = window.sfuApp.client;
  const ufrag = (d) => (/a=ice-ufrag:(\\S+)/.exec(d?.sdp ?? "") ?? [])[1] ?? null;
  return {
    local: ufrag(client.pc.localDescription), remote: ufrag(client.pc.remoteDescription),
    restarts: client.iceRestarts, participantId: client.participantId,
    state: client.pc.iceConnectionState,
  };
}
"""

# packets received so far on each of the page's local candidates ("address:port"), summed over
# its candidate pairs: media and STUN alike
_RECEIVED_ON_JS = """
async () => {
  const report = await window.sfuApp.client.pc.getStats();
  const local = new Map();
  const out = {};
  report.forEach((s) => {
    if (s.type === "local-candidate") local.set(s.id, `${s.address}:${s.port}`);
  });
  report.forEach((s) => {
    if (s.type !== "candidate-pair") return;
    const path = local.get(s.localCandidateId) ?? s.localCandidateId;
    out[path] = (out[path] ?? 0) + (s.packetsReceived ?? 0);
  });
  return out;
}
"""


@dataclass(frozen=True, slots=True)
class Ice:
    local: str
    remote: str
    restarts: int
    participant_id: str
    state: str


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.monotonic()
    frames: int
    path: str | None


@dataclass
class Call:
    """A page and the Python publisher, media both ways; what the page recorded."""

    page: Page
    publisher: SfuClient
    page_id: str
    probe: FrameProbe  # the publisher decoding the page's camera, throughout
    offset: float  # time.monotonic() - the page's performance.now() / 1000
    reading: asyncio.Task[FrameProbe]  # the probe's

    async def ice(self) -> Ice:
        row: dict[str, Any] = await self.page.evaluate(_ICE_JS)
        return Ice(row["local"], row["remote"], row["restarts"], row["participantId"], row["state"])

    async def events(self, since: float = 0.0) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self.page.evaluate("() => window.iceLog.events")
        events = [{**row, "at": self.offset + row["t"] / 1000} for row in rows]
        return [e for e in events if e["at"] >= since]

    async def offers(self) -> list[tuple[float, str]]:
        """(time, ICE ufrag) of each server offer the page received."""
        rows: list[dict[str, Any]] = await self.page.evaluate("() => window.iceLog.offers")
        return [(self.offset + row["t"] / 1000, str(row["ufrag"])) for row in rows]

    async def states(self, since: float) -> list[tuple[float, str]]:
        """(seconds since ``since``, state) of each iceConnectionState change."""
        rows: list[dict[str, Any]] = await self.page.evaluate("() => window.iceLog.states")
        changes = [(self.offset + row["t"] / 1000 - since, str(row["state"])) for row in rows]
        return [(round(t, 2), state) for t, state in changes if t >= 0]

    async def samples(self) -> list[Sample]:
        rows: list[dict[str, Any]] = await self.page.evaluate("() => window.iceLog.samples")
        return [Sample(self.offset + r["t"] / 1000, int(r["frames"]), r["path"]) for r in rows]

    async def path(self) -> str | None:
        samples = await self.samples()
        return samples[-1].path if samples else None

    async def new_path(self, old: str | None, since: float) -> tuple[float, float, float]:
        """Wait for media both ways on a path other than ``old``: (when the page's path
        changed, its first frame decoded on it, the publisher's first frame after it)."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            samples = await self.samples()
            switched = next(
                (s for s in samples if s.at > since and s.path not in (None, old)), None
            )
            if switched is not None:
                later = [s for s in samples if s.at >= switched.at]
                page_frame = next(
                    (b.at for a, b in itertools.pairwise(later) if b.frames > a.frames),
                    None,
                )
                there = next((r.at for r in self.probe.records if r.at > switched.at), None)
                if page_frame is not None and there is not None:
                    return switched.at, page_frame, there
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"no media both ways on a new path within {TIMEOUT} s (old {old}): page samples "
            f"{(await self.samples())[-10:]}, events {await self.events()}"
        )

    async def media_on(self, path: str | None) -> None:
        """Wait until what the server sends the page arrives on ``path`` alone: the server
        moved to the new pair too (the page would decode media sent to its old sockets)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            before: dict[str, int] = await self.page.evaluate(_RECEIVED_ON_JS)
            await asyncio.sleep(1.0)
            after: dict[str, int] = await self.page.evaluate(_RECEIVED_ON_JS)
            grew = {p: n - before.get(p, 0) for p, n in after.items() if n > before.get(p, 0)}
            if path is not None and grew.get(path, 0) >= MIN_PACKETS and grew.keys() == {path}:
                return
            assert time.monotonic() < deadline, f"packets in 1 s on {grew}, not on {path} alone"

    async def flowing_both_ways(self) -> None:
        await wait_flowing(self.page, PUBLISHER, ("camera",))
        since = time.monotonic()
        deadline = since + TIMEOUT
        while sum(r.at > since for r in self.probe.records) < 10:
            assert time.monotonic() < deadline, (
                "the publisher decodes no frame of the page's camera"
            )
            await asyncio.sleep(0.1)


async def clock_offset(page: Page) -> float:
    """time.monotonic() - performance.now() in seconds, to the round trip's midpoint."""
    before = time.monotonic()
    now_ms: float = await page.evaluate("() => performance.now()")
    return (before + time.monotonic()) / 2 - now_ms / 1000


@contextlib.asynccontextmanager
async def in_call(page: Page, publisher: SfuClient) -> AsyncIterator[Call]:
    """The joined ``page`` and ``publisher`` in a call: recording, media both ways."""
    await page.evaluate(_RECORD_JS, PUBLISHER)
    page_id: str = await page.evaluate("() => window.sfuApp.client.participantId")
    remote = await publisher.wait_for_track(page_id, "video", TIMEOUT)
    remote.drain()
    probe = FrameProbe(remote.track)
    reading = asyncio.create_task(probe.run(duration=3600, timeout=3600))
    try:
        call = Call(page, publisher, page_id, probe, await clock_offset(page), reading)
        await call.flowing_both_ways()
        yield call
    finally:
        reading.cancel()


def others_left(client: SfuClient, since: int) -> list[str]:
    return [m.type for m in client.history[since:] if m.type in ("participant-left", "bye")]


def assert_no_page_errors(logs: list[PageLog]) -> None:
    problems = {log.name: log.problems for log in logs if log.problems}
    assert not problems, f"the pages reported problems: {problems}"


async def test_page_restarts_ice_when_asked(
    browser: Browser, make_client: ClientFactory, room: str
) -> None:
    publisher = await make_client(room, PUBLISHER)
    await publisher.publish(MarkerVideoTrack(PALETTE[0], WIDTH, HEIGHT, FPS), "camera")
    async with in_call(await browser.join(room, "page"), publisher) as call:
        before, old_path = await call.ice(), await call.path()
        history_at = len(publisher.history)

        started = time.monotonic()
        await call.page.evaluate("() => window.sfuApp.client.restartIce()")
        answered = time.monotonic()
        after = await call.ice()
        assert after.local != before.local, "the page's offer kept its ICE credentials"
        assert after.remote != before.remote, "the server's answer kept its ICE credentials"
        assert after.restarts == 1
        assert after.participant_id == before.participant_id == call.page_id
        # the new session carries the media: the page's new candidates are new sockets
        switched, page_frame, there = await call.new_path(old_path, started)
        print(
            f"\nrestartIce() -> answer {answered - started:.2f} s, new path"
            f" {switched - started:.2f} s ({old_path} -> {await call.path()}), first frame on"
            f" it: page {page_frame - started:.2f} s, publisher {there - started:.2f} s"
        )
        await call.media_on(await call.path())
        await call.flowing_both_ways()
        # the same call: no leave, no automatic restart, no reconnection
        assert others_left(publisher, history_at) == []
        assert call.page_id in publisher.participants
        assert await call.events() == []
        assert (await call.ice()).restarts == 1
    browser.assert_no_page_errors()


# --- the page behind a veth ---


@dataclass
class LinkedCall:
    link: ShapedLink
    server: ServerProcess
    call: Call

    def server_log(self, event: str) -> list[dict[str, Any]]:
        records = []
        for line in self.server.stderr_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == event:
                    records.append(record)
        return records


@pytest.fixture
def link() -> Iterator[ShapedLink]:
    try:
        check_available()
    except LinkUnavailable as exc:
        unavailable(str(exc))
    with ShapedLink(f"ir{uuid.uuid4().hex[:6]}") as made:
        yield made


@contextlib.asynccontextmanager
async def linked_call(
    link: ShapedLink, workdir: Path, logs: list[PageLog]
) -> AsyncIterator[LinkedCall]:
    """The server and the publisher in the link's server namespace, the page (its own
    Chromium) behind the veth on SUBSCRIBER_ADDRESS; media flowing both ways."""
    room = f"room-{uuid.uuid4().hex[:8]}"
    async with contextlib.AsyncExitStack() as stack:
        server = ServerProcess(link, workdir)
        stack.callback(server.stop)
        with link.entered():
            set_ice_host_addresses(["127.0.0.1"])
            stack.callback(set_ice_host_addresses, [])
            publisher = await SfuClient.connect(server.url(), room, PUBLISHER)
            stack.push_async_callback(publisher.close)
            await publisher.publish(MarkerVideoTrack(PALETTE[0], WIDTH, HEIGHT, FPS), "camera")
        url = server.url(SERVER_ADDRESS)
        # getUserMedia needs a secure context: http://10.99.0.1 is not one by itself
        flags = [*CHROMIUM_FLAGS, f"--unsafely-treat-insecure-origin-as-secure={url}"]
        chromium = await stack.enter_async_context(
            chromium_in(link.subscriber_ns, logs, NICE, flags)
        )
        context = await chromium.browser.new_context(viewport={"width": 960, "height": 600})
        page = await context.new_page()
        log = PageLog("page")
        logs.append(log)
        page.on("console", lambda m: log.console(m.type, m.text))
        page.on("pageerror", lambda e: log.console("pageerror", str(e)))
        query = urlencode({"room": room, "name": "page", "autojoin": "1", **CAPTURE})
        await page.goto(f"{url}/?{query}")
        await wait_joined(page)
        yield LinkedCall(link, server, await stack.enter_async_context(in_call(page, publisher)))


def move_page(link: ShapedLink) -> float:
    """The page's address changes from SUBSCRIBER_ADDRESS to NEW_ADDRESS, which comes with its
    route to the server (as a new network's address does); returns when the old one went. The
    server's side can reach the new address beforehand: its replies are not what is measured."""
    sub = link.subscriber_ns
    _run("ip", "-n", link.server_ns, "route", "add", f"{NEW_ADDRESS}/32", "dev", SERVER_IF)
    changed = time.monotonic()
    _run("ip", "-n", sub, "addr", "del", f"{SUBSCRIBER_ADDRESS}/{PREFIX}", "dev", SUBSCRIBER_IF)
    _run("ip", "-n", sub, "addr", "add", NEW_ADDRESS, "peer", f"{SERVER_ADDRESS}/32",
         "dev", SUBSCRIBER_IF)  # fmt: skip
    return changed


async def change_address(linked: LinkedCall) -> list[dict[str, Any]]:
    """Move the page to NEW_ADDRESS; check that the call goes on there as the same call, with
    new ICE credentials on both sides and the server's packets on the new path; print the
    times. Returns the page's events since the change."""
    call = linked.call
    before, old_path = await call.ice(), await call.path()
    assert old_path is not None and old_path.startswith(f"{SUBSCRIBER_ADDRESS}:")
    history_at = len(call.publisher.history)

    changed = move_page(linked.link)
    switched, page_frame, there = await call.new_path(old_path, changed)
    # nothing the page does can come before ``changed`` (taken before the address goes), but
    # its clock is mapped onto ours to within half a page.evaluate round trip: an event at the
    # change itself (the browser's ``online``) could read as a few ms earlier, and be lost
    events = await call.events(changed - CLOCK_SLACK)
    after = await call.ice()
    seen = [(e["type"], e["reason"] or e["how"], round(e["at"] - changed, 2)) for e in events]
    print(
        f"\naddress change -> page's ICE states {await call.states(changed)}, events {seen};"
        f" new path {switched - changed:.2f} s ({old_path} -> {await call.path()}); first"
        f" frame on it: page {page_frame - changed:.2f} s, publisher {there - changed:.2f} s"
    )
    assert after.local != before.local and after.remote != before.remote
    assert after.participant_id == before.participant_id == call.page_id
    path = await call.path()
    assert path is not None and path.startswith(f"{NEW_ADDRESS}:"), path
    await call.media_on(path)
    await call.flowing_both_ways()
    assert others_left(call.publisher, history_at) == []
    assert call.page_id in call.publisher.participants
    assert not [e for e in await call.events() if e["type"] in ("closed", "participant-left")]
    return events


async def test_page_restarts_ice_by_itself_when_its_address_changes(
    link: ShapedLink, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    logs: list[PageLog] = []
    request.node.browser_logs = logs
    async with linked_call(link, tmp_path, logs) as linked:
        events = await change_address(linked)
        # the page noticed at once (the browser's `online`): ICE restarted, signaling resumed
        types = [(e["type"], e["reason"] or e["how"]) for e in events]
        assert types == [
            ("reconnecting", "network changed"),
            ("ice-restart", "network changed"),
            ("reconnected", "resumed"),
        ], events
        # its restart brought the path back before the server's silence timer (4 s) ran out
        assert not linked.server_log("offering an ICE restart")
    assert_no_page_errors(logs)


async def test_page_survives_an_address_change_its_browser_does_not_report(
    link: ShapedLink, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Another network stays up (an address on a second interface): Chromium fires no
    `online`, and its WebSocket, bound to the address that went, is dead without a word. The
    page learns it from its ICE connection ("disconnected" after ~5 s here): it restarts ICE,
    gets no answer, resumes on a new WebSocket (which sends that offer again) and carries on."""
    logs: list[PageLog] = []
    request.node.browser_logs = logs
    sub = link.subscriber_ns
    _run("ip", "-n", sub, "link", "add", "other0", "type", "veth", "peer", "name", "other1")
    _run("ip", "-n", sub, "addr", "add", f"{OTHER_ADDRESS}/32", "dev", "other0")
    for interface in ("other0", "other1"):
        _run("ip", "-n", sub, "link", "set", interface, "up")
    async with linked_call(link, tmp_path, logs) as linked:
        events = await change_address(linked)
        types = [(e["type"], e["reason"] or e["how"]) for e in events]
        assert types[0][0] == "ice-restart" and types[0][1] in ("disconnected", "failed"), events
        assert types[1:3] == [
            ("reconnecting", "no answer to an ICE restart"),
            ("reconnected", "resumed"),
        ], events
    assert_no_page_errors(logs)


@contextlib.contextmanager
def udp_dropped(link: ShapedLink, *, up: bool = True, down: bool = False) -> Iterator[None]:
    """Everything UDP the page sends (``up``: media, RTCP, STUN) or receives (``down``) is
    dropped while its WebSocket goes on."""
    ends = [(link.subscriber_ns, SUBSCRIBER_IF)] if up else []
    if down:
        ends.append((link.server_ns, SERVER_IF))
    with contextlib.ExitStack() as stack:
        for ns, interface in ends:
            tc = ("tc", "-n", ns)
            _run(*tc, "qdisc", "add", "dev", interface, "root", "handle", "1:", "htb",
                 "default", "1")  # fmt: skip
            stack.callback(_run, *tc, "qdisc", "del", "dev", interface, "root")
            for minor in ("1", "2"):
                _run(*tc, "class", "add", "dev", interface, "parent", "1:",
                     "classid", f"1:{minor}", "htb", "rate", "1gbit")  # fmt: skip
            _run(*tc, "qdisc", "add", "dev", interface, "parent", "1:2", "pfifo", "limit", "0")
            _run(*tc, "filter", "add", "dev", interface, "parent", "1:", "protocol", "ip",
                 "u32", "match", "ip", "protocol", "17", "0xff", "flowid", "1:2")  # fmt: skip
        yield


async def test_server_restarts_ice_for_a_page_gone_silent(
    link: ShapedLink, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Nothing from the page for half the peer timeout (4 s): the server offers it an ICE
    restart, which the browser answers by itself; once the page's packets flow again the new
    session comes up, before the peer timeout (8 s) would remove it."""
    logs: list[PageLog] = []
    request.node.browser_logs = logs
    async with linked_call(link, tmp_path, logs) as linked:
        call = linked.call
        before, old_path = await call.ice(), await call.path()
        history_at = len(call.publisher.history)

        silenced = time.monotonic()
        with udp_dropped(link):
            deadline = silenced + SILENCE + 3.0
            while not linked.server_log("offering an ICE restart"):
                assert time.monotonic() < deadline, "the server offered no ICE restart"
                await asyncio.sleep(0.1)
            offered = time.monotonic()
            await asyncio.sleep(max(0.0, silenced + SILENCE - time.monotonic()))
        restored = time.monotonic()
        switched, page_frame, there = await call.new_path(old_path, restored)
        after = await call.ice()
        events = await call.events(silenced)
        seen = [(e["type"], e["reason"], round(e["at"] - silenced, 2)) for e in events]
        offers = [(round(at - silenced, 2), ufrag) for at, ufrag in await call.offers()]
        print(
            f"\nserver's restart offered {offered - silenced:.2f} s into the silence (at most"
            f" 0.1 s late); the page's offers from the server {offers}, its events {seen};"
            f" after the silence: new path {switched - restored:.2f} s ({old_path} ->"
            f" {await call.path()}), first frame on it: page {page_frame - restored:.2f} s,"
            f" publisher {there - restored:.2f} s"
        )
        # the server's offer came with new credentials, and the page's connection took them
        assert any(u != before.remote for at, u in await call.offers() if at > silenced), offers
        assert after.remote != before.remote and after.local != before.local
        assert after.participant_id == call.page_id
        # that restart alone brought the path back (Chromium says "disconnected" much later)
        assert not [e for e in events if e["type"] == "ice-restart"], seen
        await call.media_on(await call.path())
        await call.flowing_both_ways()
        assert others_left(call.publisher, history_at) == []
        assert call.page_id in call.publisher.participants
    assert_no_page_errors(logs)


async def test_page_restarts_ice_by_itself_when_nothing_reaches_it(
    link: ShapedLink, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The server still hears the page (no reason to restart) but nothing of it reaches the
    page: Chromium says "disconnected" (after ~7.5 s here), and 1 s later the page restarts ICE
    by itself; the new session comes up once the path carries packets again."""
    logs: list[PageLog] = []
    request.node.browser_logs = logs
    async with linked_call(link, tmp_path, logs) as linked:
        call = linked.call
        before, old_path = await call.ice(), await call.path()
        history_at = len(call.publisher.history)

        silenced = time.monotonic()
        with udp_dropped(link, up=False, down=True):
            deadline = silenced + BLACKOUT_LIMIT
            while not [e for e in await call.events(silenced) if e["type"] == "ice-restart"]:
                assert time.monotonic() < deadline, (
                    f"the page did not restart ICE: its states {await call.states(silenced)}"
                )
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # its offer and the server's answer cross meanwhile
        restored = time.monotonic()
        switched, page_frame, there = await call.new_path(old_path, restored)
        after = await call.ice()
        events = await call.events(silenced)
        seen = [
            (e["type"], e["reason"], e["attempt"], round(e["at"] - silenced, 2)) for e in events
        ]
        print(
            f"\nnothing reaching the page: its states {await call.states(silenced)}, events"
            f" {seen}; after the blackout ({restored - silenced:.2f} s): new path"
            f" {switched - restored:.2f} s ({old_path} -> {await call.path()}), first frame on"
            f" it: page {page_frame - restored:.2f} s, publisher {there - restored:.2f} s"
        )
        assert events[0]["type"] == "ice-restart" and events[0]["reason"] == "disconnected", seen
        assert not linked.server_log("offering an ICE restart")  # the page's own restart
        assert after.remote != before.remote and after.local != before.local
        assert after.restarts >= 1 and after.participant_id == call.page_id
        await call.media_on(await call.path())
        await call.flowing_both_ways()
        assert others_left(call.publisher, history_at) == []
        assert call.page_id in call.publisher.participants
    assert_no_page_errors(logs)
