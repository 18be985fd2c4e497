"""A three-party call through `sfu serve` on loopback: late-joiner time to first frame, server CPU.

    .venv/bin/python benchmarks/three_party_call.py [--seconds 20] [--size 320x240] [--fps 30]

Two participants publish a marker video and a tone; a third joins after a few seconds and the
time from its join to the first decoded video frame of each publisher is printed. Then, with all
three publishing and receiving, the server process's CPU (user+system, from /proc) is sampled over
``--seconds``. Clients run in this process (they encode and decode; the server does neither), so
this process's own CPU is printed too: if it is near 200 %, the machine, not the server, limits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu_client import PALETTE, TONES, FrameProbe, MarkerVideoTrack, SfuClient, ToneAudioTrack

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def start_server() -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "signaling.cli", "serve", "--port", "0"]
    command += ["--ice-host", "127.0.0.1", "--log-level", "warning", "--workers", "1"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    match = re.search(r"(http://\S+)", line)
    if match is None:
        server.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return server, match.group(1).replace("http", "ws", 1) + "/ws"


async def publish(client: SfuClient, index: int, size: tuple[int, int], fps: float) -> None:
    video = MarkerVideoTrack(PALETTE[index], size[0], size[1], fps)
    await client.publish_many([(video, "camera"), (ToneAudioTrack(TONES[index]), "microphone")])


async def first_frame(client: SfuClient, sender: SfuClient, joined_at: float) -> float:
    assert sender.participant_id is not None
    remote = await client.wait_for_track(sender.participant_id, "video", 20.0)
    probe = FrameProbe(remote.track)
    await probe.run(count=1, timeout=20.0)
    assert probe.first_frame_at is not None, "no frame"
    return probe.first_frame_at - joined_at


async def drain(client: SfuClient, stop: asyncio.Event) -> None:
    """Keep decoding what arrives, as a participant would."""
    while not stop.is_set():
        for remote in list(client.remote_tracks.values()):
            with contextlib.suppress(Exception):  # a timeout, or a track that ended
                await asyncio.wait_for(remote.track.recv(), 0.05)
        await asyncio.sleep(0)


async def main(seconds: float, size: tuple[int, int], fps: float) -> None:
    set_ice_host_addresses(["127.0.0.1"])
    server, url = start_server()
    clients: list[SfuClient] = []
    try:
        for i in range(2):
            clients.append(await SfuClient.connect(url, "bench", f"p{i}"))
            await publish(clients[-1], i, size, fps)
        await asyncio.sleep(3.0)
        joined_at = time.monotonic()
        late = await SfuClient.connect(url, "bench", "late")
        clients.append(late)
        times = await asyncio.gather(*(first_frame(late, c, joined_at) for c in clients[:2]))
        for sender, t in zip(clients[:2], times, strict=True):
            print(f"late joiner: first video frame from {sender.name} after {t * 1000:.0f} ms")
        await publish(late, 2, size, fps)
        stop = asyncio.Event()
        drains = [asyncio.create_task(drain(c, stop)) for c in clients]
        await asyncio.sleep(3.0)
        server_before, own_before = cpu_seconds(server.pid), time.process_time()
        started = time.monotonic()
        await asyncio.sleep(seconds)
        wall = time.monotonic() - started
        server_cpu = (cpu_seconds(server.pid) - server_before) / wall
        own_cpu = (time.process_time() - own_before) / wall
        stop.set()
        await asyncio.gather(*drains)
        print(
            f"3-party call, {size[0]}x{size[1]}@{fps:g} video + opus each, {wall:.0f} s: "
            f"server CPU {server_cpu * 100:.1f} % of one core; clients (this process) "
            f"{own_cpu * 100:.0f} %"
        )
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    asyncio.run(main(args.seconds, (width, height), args.fps))
