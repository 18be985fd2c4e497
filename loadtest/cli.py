"""``sfu-loadtest`` (also ``python -m loadtest``): fill a running server with load participants."""

from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click
import uvloop
from rich.console import Console

from loadtest.plot import plot
from loadtest.progress import Display, NullDisplay, RichDisplay
from loadtest.report import build, write_json
from loadtest.runner import LoadConfig, LoadRun
from loadtest.simulcast import DEFAULT_LAYERS, parse_layers, parse_subscriber_layers
from loadtest.simulcast import parse_bitrate as bitrate_of
from loadtest.summary import render
from sfu.media.aiortc_bridge import set_ice_host_addresses

DEFAULT_URL = "http://127.0.0.1:8080"


def parse_bitrate(text: str) -> int:
    """``300k``, ``1.5M`` or ``64000`` -> bits per second."""
    try:
        return bitrate_of(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"not a size: {text!r} (e.g. 640x360)") from None
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise click.BadParameter("width and height must be positive and even")
    return width, height


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command(context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
@click.argument("urls", nargs=-1, metavar="[URL]...")
@click.option("-r", "--rooms", type=click.IntRange(1), default=4)
@click.option("-p", "--participants", type=click.IntRange(1), default=5, help="Per room.")
@click.option(
    "--publishers",
    type=click.IntRange(0),
    default=None,
    help="Participants per room that publish audio + video. [default: all]",
)
@click.option(
    "-d",
    "--duration",
    type=click.FloatRange(0),
    default=30.0,
    help="Seconds everyone stays after the ramp-up (the hold the totals describe).",
)
@click.option(
    "--ramp", type=click.FloatRange(0), default=10.0, help="Seconds over which participants join."
)
@click.option("--video-size", default="320x240", help="WIDTHxHEIGHT of the VP8 clip.")
@click.option("--fps", type=click.IntRange(1, 60), default=30)
@click.option("--video-bitrate", default="300k", help="Bits/s of the VP8 clip (e.g. 300k, 1.5M).")
@click.option("--audio-bitrate", default="32k", help="Bits/s of the Opus clip.")
@click.option(
    "--audio-frame-ms",
    type=click.Choice(["10", "20", "40", "60"]),
    default="20",
    help="Opus frame (and packet) duration; 60 sends a third of the packets.",
)
@click.option(
    "--simulcast",
    is_flag=True,
    help="Publish video as rid simulcast: one pre-encoded VP8 clip per --layers entry "
    "(instead of --video-size and --video-bitrate).",
)
@click.option(
    "--layers",
    default=None,
    help="With --simulcast: its layers, WIDTHxHEIGHT@BITRATE,... (2 to 4). "
    f"[default: {DEFAULT_LAYERS}]",
)
@click.option(
    "--subscriber-layers",
    default="best",
    help="With --simulcast: what subscribers ask for (setTrackSettings maxLayer): best (nothing "
    "asked), spread (layer = index in the room mod layers), cycle (spread, then the next layer "
    "every --switch-every seconds) or a layer index (0 = smallest).",
)
@click.option(
    "--switch-every",
    type=click.FloatRange(0.5),
    default=5.0,
    help="With --subscriber-layers cycle: seconds between a subscriber's layer changes.",
)
@click.option("--no-video", is_flag=True, help="Publish audio only.")
@click.option("--no-audio", is_flag=True, help="Publish video only.")
@click.option(
    "--ice-host",
    multiple=True,
    help="Address the load clients gather ICE candidates on (repeatable). "
    "[default: 127.0.0.1 for a server on loopback, else every non-loopback interface]",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for report.json and report.png. [default: loadtest-results/DATE-TIME]",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live display on stderr. [default: when stderr is a terminal]",
)
@click.option("--room-prefix", default="load", help="Room names are PREFIX-RUNID-N.")
@click.option("--request-timeout", type=click.FloatRange(1), default=10.0)
def main(
    urls: tuple[str, ...],
    rooms: int,
    participants: int,
    publishers: int | None,
    duration: float,
    ramp: float,
    video_size: str,
    fps: int,
    video_bitrate: str,
    audio_bitrate: str,
    audio_frame_ms: str,
    simulcast: bool,
    layers: str | None,
    subscriber_layers: str,
    switch_every: float,
    no_video: bool,
    no_audio: bool,
    ice_host: tuple[str, ...],
    output: Path | None,
    progress: bool | None,
    room_prefix: str,
    request_timeout: float,
) -> None:
    """Fill the aiosfu server at URL with ROOMS x PARTICIPANTS load participants.

    Several URLs (the nodes of a cluster, or separate servers): room N is joined through the
    URL N mod their number, and the report gives each URL's results besides the totals.
    [default URL: http://127.0.0.1:8080]

    Publishers loop a VP8 clip (or, with --simulcast, one per layer) and an Opus clip encoded
    once at start; everyone subscribes and counts RTP without decoding. At the end: a summary
    here, and report.json and report.png.
    """
    urls = urls or (DEFAULT_URL,)
    for url in urls:
        if urlsplit(url).scheme not in ("http", "https", "ws", "wss") or not urlsplit(url).hostname:
            raise click.BadParameter(f"not a server URL: {url!r}", param_hint="URL")
    if len(set(urls)) < len(urls):
        raise click.BadParameter("a URL is given twice", param_hint="URL")
    if rooms < len(urls):
        raise click.UsageError(f"{len(urls)} URLs need at least {len(urls)} rooms (one each)")
    width, height = parse_size(video_size)
    if layers is not None and not simulcast:
        raise click.UsageError("--layers needs --simulcast")
    if subscriber_layers != "best" and not simulcast:
        raise click.UsageError("--subscriber-layers needs --simulcast")
    try:
        specs = parse_layers(layers or DEFAULT_LAYERS) if simulcast else None
        choice = parse_subscriber_layers(subscriber_layers, len(specs) if specs else 1)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    config = LoadConfig(
        urls=urls,
        rooms=rooms,
        participants=participants,
        publishers=publishers,
        duration=duration,
        ramp=ramp,
        width=width,
        height=height,
        fps=fps,
        video_bitrate=parse_bitrate(video_bitrate),
        audio_bitrate=parse_bitrate(audio_bitrate),
        audio_frame_ms=int(audio_frame_ms),
        video=not no_video,
        audio=not no_audio,
        room_prefix=room_prefix,
        request_timeout=request_timeout,
        layers=specs,
        subscriber_layers=choice,
        switch_every=switch_every,
    )
    if no_video and no_audio:
        raise click.UsageError("--no-video and --no-audio leave nothing to publish")
    if ice_host:
        set_ice_host_addresses(ice_host)
    elif all(is_loopback(url) for url in urls):
        set_ice_host_addresses(["127.0.0.1"])
    if output is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        output = Path("loadtest-results") / stamp
    output.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    show = progress if progress is not None else console.is_terminal
    display: Display = RichDisplay(console) if show else NullDisplay()
    console.print(
        f"load: {config.total} participants in {rooms} rooms, ramp {ramp:g} s, hold {duration:g} s"
        f" → {', '.join(urls)}"
    )
    data = uvloop.run(LoadRun(config, display).run())
    report = build(data)
    write_json(report, output / "report.json")
    plot(report, output / "report.png")
    render(report, Console())
    click.echo(f"report: {output / 'report.json'}  picture: {output / 'report.png'}")
    nobody = any(node["joins"]["succeeded"] == 0 for node in report["nodes"])
    if nobody or not report["packets"]["whole_run"]["received"]:
        sys.exit(1)  # a server nobody could join, or no media


if __name__ == "__main__":
    main()
