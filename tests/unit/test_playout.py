"""The adaptive playout delay (sfu_client.playout): the scheduler with a fake clock, table-driven
over the streams a receiver meets, the track that releases frames at their render time, and the
client that puts it over its received video."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from sfu_client import SfuClient
from sfu_client.playout import MAX_STEP, PlayoutConfig, PlayoutScheduler, PlayoutTrack
from tests.unit.test_client_messages import NoSession, SilentWebSocket

FPS = 20
STEP = 1 / FPS
TICKS = 90_000 // FPS  # RTP timestamp step of a 20 fps stream at 90 kHz
TRANSIT = 0.030  # the network's fixed part
CONFIG = PlayoutConfig()
FREEZE = 0.2  # a gap between shown frames of 4 frame intervals (the e2e test's threshold)


@dataclass(frozen=True)
class Frame:
    timestamp: int  # RTP
    arrival: float


def steady(count: int, *, start: float = 0.0, timestamp: int = 1000) -> list[Frame]:
    return [
        Frame((timestamp + i * TICKS) % (1 << 32), start + i * STEP + TRANSIT) for i in range(count)
    ]


def jittered(count: int, spread: float, seed: int = 1) -> list[Frame]:
    """Each frame delayed by up to ``spread`` more, in order (none overtakes the one ahead)."""
    rng = random.Random(seed)
    frames, last = [], 0.0
    for frame in steady(count):
        last = max(last, frame.arrival + rng.uniform(0, spread))
        frames.append(Frame(frame.timestamp, last))
    return frames


def repaired(frames: list[Frame], at: int, late: float) -> list[Frame]:
    """The frame at index ``at`` waits ``late`` for its retransmission; those behind it are
    held until then too (the jitter buffer hands frames over in order)."""
    release = frames[at].arrival + late
    return [
        Frame(f.timestamp, max(f.arrival, release)) if i >= at else f for i, f in enumerate(frames)
    ]


def paused(frames: list[Frame], at: int, pause: float, *, clock_runs: bool) -> list[Frame]:
    """Nothing for ``pause`` seconds from index ``at``; the timestamps after it jump with the
    clock (a muted camera) or go on where they stopped (a source that paused its clock)."""
    ticks = round(pause * 90_000) if clock_runs else 0
    return frames[:at] + [
        Frame((f.timestamp + ticks) % (1 << 32), f.arrival + pause) for f in frames[at:]
    ]


def restarted(frames: list[Frame], at: int, timestamp: int) -> list[Frame]:
    """From index ``at`` another stream: its timestamps start anywhere."""
    return frames[:at] + [
        Frame((timestamp + (i - at) * TICKS) % (1 << 32), f.arrival)
        for i, f in enumerate(frames) if i >= at
    ]  # fmt: skip


@dataclass
class Played:
    scheduler: PlayoutScheduler
    frames: list[Frame]
    render: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)

    @property
    def shown(self) -> list[float]:
        """When each frame is shown: its render time, or its arrival when that is later."""
        return [max(r, f.arrival) for r, f in zip(self.render, self.frames, strict=True)]

    def gaps(self, since: int = 0) -> list[float]:
        shown = self.shown[since:]
        return [b - a for a, b in itertools.pairwise(shown)]

    def waits(self) -> list[float]:
        return [r - f.arrival for r, f in zip(self.render, self.frames, strict=True)]


def play(frames: list[Frame], config: PlayoutConfig = CONFIG) -> Played:
    played = Played(PlayoutScheduler(config), frames)
    for frame in frames:
        played.render.append(
            played.scheduler.schedule_timestamp(frame.timestamp, 90_000, frame.arrival)
        )
        played.delays.append(played.scheduler.delay)
    return played


def no_freeze(played: Played, since: int = 0) -> bool:
    return max(played.gaps(since)) < FREEZE


# --- the scheduler, table-driven ---


@dataclass(frozen=True)
class Case:
    name: str
    frames: list[Frame]
    check: Callable[[Played], bool]
    reanchors: int = 0


def smooth_after(index: int) -> Callable[[Played], bool]:
    """From ``index`` on, frames are shown at their media spacing (within 1 ms)."""
    return lambda p: all(abs(g - STEP) < 0.001 for g in p.gaps(index))


CASES = [
    Case(
        "a steady stream plays at its own pace with the margin as its only delay",
        steady(400),
        lambda p: smooth_after(0)(p) and abs(p.delays[-1] - CONFIG.margin) < 0.001,
    ),
    Case(
        "jitter of up to 100 ms: the delay grows to cover it, and no frame freezes after",
        jittered(600, 0.100),
        lambda p: 0.06 < p.delays[-1] <= 0.100 + CONFIG.margin and no_freeze(p, 20),
    ),
    Case(
        "a repair 250 ms late stalls once; the delay then covers the next one: no burst after",
        repaired(repaired(steady(400), 100, 0.250), 200, 0.250),
        lambda p: (
            max(p.gaps(0)[:110]) > FREEZE  # the first stalls: nothing could know it
            and p.delays[250] >= 0.24
            and smooth_after(110)(p)  # the held frames are spread out, the second hidden
        ),
    ),
    Case(
        "the delay shrinks slowly once the link is calm, down to the margin",
        repaired(steady(1200), 50, 0.250),
        lambda p: (
            p.delays[240] > 0.2  # still holding within the window (200 frames)
            and abs(p.delays[-1] - CONFIG.margin) < 0.002
            and all(g >= STEP * (1 - CONFIG.shrink_rate) - 1e-6 for g in p.gaps(60))
        ),
    ),
    Case(
        "a pause while the delay shrinks does not count as calm time",
        paused(repaired(steady(600), 50, 0.250), 280, 10.0, clock_runs=True),
        lambda p: (
            p.delays[279] - p.delays[280] <= MAX_STEP * CONFIG.shrink_rate + 1e-6
            and p.delays[280] > 0.1
        ),
    ),
    Case(
        "the RTP timestamp wraps mid-stream: nothing changes",
        steady(400, timestamp=(1 << 32) - 100 * TICKS - 7),
        smooth_after(0),
    ),
    Case(
        "a pause whose timestamps ran with the clock: the same mapping, no wait, no burst",
        paused(jittered(600, 0.100), 300, 10.0, clock_runs=True),
        lambda p: no_freeze(p, 301) and p.waits()[300] <= p.delays[299] + 0.001,
    ),
    Case(
        "a pause whose timestamps stood still: shown at once, re-anchored, smooth after",
        paused(steady(600), 300, 10.0, clock_runs=False),
        lambda p: (
            p.render[300] <= p.frames[300].arrival  # not held
            and max(p.waits()) <= CONFIG.max_delay + CONFIG.margin
            and smooth_after(300 + round(CONFIG.reanchor_after * FPS) + 1)(p)
        ),
        reanchors=1,
    ),
    Case(
        "a stream restart with timestamps far ahead: re-anchored at once, never held long",
        restarted(steady(600), 300, 123_456_789),
        lambda p: max(p.waits()) <= CONFIG.max_delay + CONFIG.margin and smooth_after(299)(p),
        reanchors=1,
    ),
    Case(
        "a stream restart with timestamps behind: shown at once, then re-anchored",
        restarted(steady(600, timestamp=90_000_000), 300, 5),
        lambda p: (
            max(p.waits()) <= CONFIG.max_delay + CONFIG.margin
            and max(p.gaps(0)) < 2 * STEP
            and smooth_after(300 + round(CONFIG.reanchor_after * FPS) + 1)(p)
        ),
        reanchors=1,
    ),
    Case(
        "an outage of 2 s is not learnt from: the delay stays within its bound",
        repaired(steady(400), 200, 2.0),
        lambda p: max(p.delays) <= CONFIG.max_delay and p.delays[-1] < 0.05,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_playout_schedule(case: Case) -> None:
    played = play(case.frames)
    assert case.check(played), (
        f"delays {[round(d, 3) for d in played.delays[::25]]}, "
        f"largest gap {max(played.gaps()):.3f}, longest wait {max(played.waits()):.3f}"
    )
    assert played.scheduler.reanchors == case.reanchors
    assert all(0 <= d <= CONFIG.max_delay + 1e-9 for d in played.delays)


def test_delay_bounds_hold_under_any_jitter() -> None:
    config = PlayoutConfig(min_delay=0.05, max_delay=0.2)
    played = play(jittered(600, 0.6), config)
    assert all(0.05 - 1e-9 <= d <= 0.2 + 1e-9 for d in played.delays)
    assert max(played.waits()) <= 0.2 + config.margin


def test_too_late_is_past_drop_after() -> None:
    scheduler = PlayoutScheduler()
    assert not scheduler.too_late(10.0, 10.0 + CONFIG.drop_after)
    assert scheduler.too_late(10.0, 10.0 + CONFIG.drop_after + 0.001)


@pytest.mark.parametrize(
    "kwargs",
    [{"min_delay": 0.3, "max_delay": 0.2}, {"min_delay": -0.1}, {"quantile": 0.0},
     {"window": 0}, {"shrink_rate": -1.0}],
)  # fmt: skip
def test_bad_config_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="playout"):
        PlayoutConfig(**kwargs)  # type: ignore[arg-type]


# --- the track ---


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Source(MediaStreamTrack):
    """A receiving track fed by the test; ``None`` ends it (as aiortc's does)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[av.VideoFrame | None] = asyncio.Queue()

    async def recv(self) -> av.VideoFrame:
        frame = await self.queue.get()
        if frame is None:
            raise MediaStreamError
        return frame


def video_frame(pts: int | None) -> av.VideoFrame:
    frame = av.VideoFrame(16, 16, "yuv420p")
    frame.pts = pts
    frame.time_base = Fraction(1, 90_000)
    return frame


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_track_passes_frames_in_order_and_ends_with_its_source() -> None:
    clock, source = Clock(), Source()
    track = PlayoutTrack(source, PlayoutConfig(margin=0.0), clock=clock)
    frames = [video_frame(i * TICKS) for i in range(3)] + [video_frame(None)]
    for frame in frames:
        source.queue.put_nowait(frame)
        await settle()
        clock.now += STEP  # each arrives on time: due at once
    assert track.id == source.id and track.kind == "video"
    assert [await track.recv() for _ in frames] == frames
    source.queue.put_nowait(None)
    with pytest.raises(MediaStreamError):
        await track.recv()
    assert track.readyState == "ended"


async def test_track_holds_a_frame_until_its_render_time() -> None:
    clock, source = Clock(), Source()
    track = PlayoutTrack(source, PlayoutConfig(min_delay=0.02, margin=0.0), clock=clock)
    source.queue.put_nowait(video_frame(0))
    receiving = asyncio.ensure_future(track.recv())
    await settle()
    assert not receiving.done()  # due 20 ms after it arrived, by the fake clock
    clock.now += 0.02
    assert isinstance(await asyncio.wait_for(receiving, 1.0), av.VideoFrame)


async def test_track_drops_frames_too_late_when_a_newer_one_waits() -> None:
    clock, source = Clock(), Source()
    track = PlayoutTrack(source, PlayoutConfig(margin=0.0), clock=clock)
    source.queue.put_nowait(video_frame(0))
    assert (await track.recv()).pts == 0
    for i in range(1, 4):  # held 2 s behind a hole, then all at once
        source.queue.put_nowait(video_frame(i * TICKS))
    clock.now += 2.0
    await settle()
    assert (await track.recv()).pts == 3 * TICKS  # the newest; the two before it skipped
    assert track.stats.dropped == 2
    source.queue.put_nowait(video_frame(4 * TICKS))
    await settle()
    assert (await track.recv()).pts == 4 * TICKS  # late too, but the newest is always shown


async def test_track_keeps_little_of_what_nobody_reads() -> None:
    clock, source = Clock(), Source()
    track = PlayoutTrack(source, PlayoutConfig(margin=0.0), clock=clock)
    for i in range(200):  # 10 s of frames, on time, never read
        source.queue.put_nowait(video_frame(i * TICKS))
        await settle()
        clock.now += STEP
    kept = track.drain()
    assert kept <= CONFIG.drop_after / STEP + 2  # half a second of frames, and the newest
    assert track.stats.dropped == 200 - kept


async def test_track_drain_and_stop() -> None:
    clock, source = Clock(), Source()
    track = PlayoutTrack(source, clock=clock)
    for i in range(3):
        source.queue.put_nowait(video_frame(i * TICKS))
    await settle()
    assert track.drain() == 3
    waiting = asyncio.ensure_future(track.recv())
    await settle()
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 1.0)


# --- the client ---


async def test_the_client_plays_out_video_by_default_and_leaves_audio_alone() -> None:
    video, audio = Source(), Source()
    audio.kind = "audio"
    client = SfuClient(NoSession(), SilentWebSocket())  # type: ignore[arg-type]
    off = SfuClient(NoSession(), SilentWebSocket(), playout_delay=False)  # type: ignore[arg-type]
    try:
        played = client._played_out("0", video)
        assert isinstance(played, PlayoutTrack) and played.source is video
        assert client._played_out("0", video) is played, "one per receiver"
        assert client._played_out("1", audio) is audio
        assert off._played_out("0", video) is video
    finally:
        await client.close()
        await off.close()
    assert played.readyState == "ended"
