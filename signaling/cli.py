"""The ``sfu`` command. Every option of ``sfu serve`` can also come from ``SFU_<OPTION>``."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
from collections.abc import Mapping
from pathlib import Path

import click
import uvloop
from aiohttp import web

from sfu.config import (
    UDP_RECEIVE_BUFFER,
    IceServer,
    MediaConfig,
    max_signaling_message,
    udp_port_taken,
)
from sfu.log import LEVELS, LogFormat, configure_logging, get_logger
from sfu.media.aiortc_bridge import set_ice_host_addresses, set_udp_receive_buffer
from signaling.app import (
    DEFAULT_JOIN_TIMEOUT,
    DEFAULT_MAX_SOCKETS_PER_ADDRESS,
    DEFAULT_RESUME_WINDOW,
    create_app,
)
from signaling.assembly import ClusterOptions, assemble
from signaling.drain import Drain
from signaling.fdlimit import raise_file_limit, watch_file_descriptors
from signaling.session import DEFAULT_MESSAGE_BURST, DEFAULT_MESSAGE_RATE
from signaling.token_cli import KEYS_FILE, read_keys, token
from signaling.turn import DEFAULT_TTL, TurnConfig, check_url, read_secret

log = get_logger()
#: Seconds an HTTP connection may stay open without a request (before the first, between two).
HTTP_IDLE_TIMEOUT = 15.0
#: Below this soft file limit the server warns at start (see docs/operations.md).
RECOMMENDED_FILE_LIMIT = 8192
_DEFAULTS = MediaConfig()


def default_workers() -> int:
    """One worker per core this process may run on: its CPU affinity (taskset, a container's
    cpuset), not the machine's core count. A CPU quota (``docker --cpus``) is not seen here."""
    return len(os.sched_getaffinity(0))


def _check_turn_urls(
    _ctx: click.Context, _param: click.Parameter, urls: tuple[str, ...]
) -> tuple[str, ...]:
    for url in urls:
        try:
            check_url(url)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return urls


@click.group()
@click.version_option(package_name="aiosfu")
def main() -> None:
    """aiosfu: a WebRTC selective forwarding unit."""


@main.command(context_settings={"auto_envvar_prefix": "SFU", "show_default": True})
@click.option("--host", default="127.0.0.1", show_envvar=True, help="Address to serve HTTP on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_envvar=True,
    help="Port to serve HTTP on; 0 picks a free one (printed on stdout).",
)
@click.option(
    "--ice-host",
    multiple=True,
    show_envvar=True,
    help="Address to gather ICE host candidates on (repeatable; in the environment, separated "
    "by spaces). Default: every non-loopback interface. Tests and loopback-only setups use "
    "127.0.0.1.",
)
@click.option(
    "--ice-server",
    multiple=True,
    show_envvar=True,
    help="STUN/TURN server URL for the server's peer connections, e.g. turn:host:3478 "
    "(repeatable). Default: none.",
)
@click.option("--ice-username", show_envvar=True, help="Username for the --ice-server URLs.")
@click.option("--ice-credential", show_envvar=True, help="Credential for the --ice-server URLs.")
@click.option(
    "--turn-url",
    multiple=True,
    show_envvar=True,
    callback=_check_turn_urls,
    help="TURN server the clients are told to use, with credentials for --turn-secret, e.g. "
    "turn:turn.example.com:3478?transport=udp or turns:turn.example.com:5349 (repeatable; "
    "in the environment, separated by spaces). Default: none.",
)
@click.option(
    "--turn-secret",
    show_envvar=True,
    help="The TURN servers' shared secret (coturn: static-auth-secret with use-auth-secret). "
    "Prefer SFU_TURN_SECRET or --turn-secret-file: command lines are visible to every user.",
)
@click.option(
    "--turn-secret-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    show_envvar=True,
    help="File whose first line is the TURN servers' shared secret.",
)
@click.option(
    "--turn-ttl",
    type=click.IntRange(min=60),
    default=DEFAULT_TTL,
    show_envvar=True,
    help="Seconds the TURN credentials handed out at a join (or resume) are good for.",
)
@click.option(
    "--peer-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=8.0,
    show_envvar=True,
    help="Seconds without any packet from a participant before it is removed.",
)
@click.option(
    "--keys-file",
    type=KEYS_FILE,
    show_envvar=True,
    help="Access tokens' keys ('KEY_ID: SECRET' lines; `sfu token keygen`): every join then "
    "needs a token (`sfu token create`). Without it anyone who reaches the server may join any "
    "room.",
)
@click.option(
    "--insecure",
    is_flag=True,
    show_envvar=True,
    help="Serve on a non-loopback address without --keys-file (anyone may join any room).",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_envvar=True,
    help="Seconds from a participant's first offer/answer to its media connection being up; "
    "at half of it the server retries with an ICE restart, at the end it gives up "
    "(bye ice-failed).",
)
@click.option(
    "--join-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_JOIN_TIMEOUT,
    show_envvar=True,
    help="Seconds from opening the signaling WebSocket to a successful join; a socket without "
    "one is closed (bye join-timeout, close code 1008).",
)
@click.option(
    "--resume-window",
    type=click.FloatRange(min=0),
    default=DEFAULT_RESUME_WINDOW,
    show_envvar=True,
    help="Seconds a participant whose signaling WebSocket dropped keeps its place (and its "
    "media) waiting for the client to resume; 0: it leaves at once.",
)
@click.option(
    "--http-idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=HTTP_IDLE_TIMEOUT,
    show_envvar=True,
    help="Seconds an HTTP connection may stay open without a request: before its first one "
    "(the request headers included) and between keep-alive requests.",
)
@click.option(
    "--udp-receive-buffer",
    type=click.IntRange(min=65536),
    default=UDP_RECEIVE_BUFFER,
    show_envvar=True,
    help="Receive buffer asked for on each media socket, in bytes: a stalled event loop then "
    "delays packets instead of dropping them. Linux caps it at net.core.rmem_max.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=default_workers,
    show_default="the cores this process may use",
    show_envvar=True,
    help="Media worker processes: every room lives in one, placed by load. 1: the rooms in "
    "this process, no worker process. With --udp-port N, worker k uses N+k.",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=0.0,
    show_envvar=True,
    help="Seconds the calls may go on after SIGTERM (or SIGINT): meanwhile no new room opens "
    "here (a join for one gets server-draining, /healthz says draining with 503), and the "
    "server stops as soon as no session is left. 0: stop at once. A second signal stops at "
    "once.",
)
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    show_envvar=True,
    help="Join a cluster of nodes through this Redis (redis://host:port/db): rooms are claimed "
    "by one node each, and clients reaching another node are relayed to it. Needs "
    "--node-address and --cluster-secret-file.",
)
@click.option(
    "--node-address",
    metavar="HOST:PORT",
    show_envvar=True,
    help="Where the other nodes reach this one's node link (TCP; with --redis).",
)
@click.option(
    "--cluster-secret-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    show_envvar=True,
    help="A file holding the secret every node of the cluster shares (node links prove it).",
)
@click.option(
    "--redis-prefix",
    default="sfu:",
    show_envvar=True,
    help="Prefix of this cluster's Redis keys (several clusters may share one Redis).",
)
@click.option(
    "--udp-port",
    type=click.IntRange(0, 65535),
    default=None,
    show_envvar=True,
    help="Carry every participant's media on this one UDP port of each --ice-host address, "
    "so a firewall opens one port (with --workers N: worker k on this port + k). Default 0: "
    "one free port per address, shared. See docs/operations.md, ports.  [default: 0]",
)
@click.option(
    "--socket-per-participant",
    is_flag=True,
    show_envvar=True,
    help="Give each participant a socket and ephemeral port of its own instead of the shared "
    "--udp-port (as before issue 13): a port per participant to open, but media from a "
    "client whose address changed is taken before its next consent check.",
)
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_envvar=True,
    help="Log line format (logs go to stderr).",
)
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    default="info",
    show_envvar=True,
)
@click.option(
    "--max-participants",
    type=click.IntRange(min=2),
    default=_DEFAULTS.max_participants_per_room,
    show_envvar=True,
    help="Participants one room admits; the next join gets room-full.",
)
@click.option(
    "--message-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_MESSAGE_RATE,
    show_envvar=True,
    help="Signaling messages per second one WebSocket's are handled at, at most; faster ones "
    "wait (and the socket is read no faster).",
)
@click.option(
    "--message-burst",
    type=click.FloatRange(min=1),
    default=DEFAULT_MESSAGE_BURST,
    show_envvar=True,
    help="Signaling messages one WebSocket may send at once before --message-rate applies.",
)
@click.option(
    "--max-sockets-per-address",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_SOCKETS_PER_ADDRESS,
    show_envvar=True,
    help="WebSockets one client address may hold open; one more is refused (HTTP 429).",
)
@click.option(
    "--max-rooms",
    type=click.IntRange(min=1),
    default=_DEFAULTS.max_rooms,
    show_envvar=True,
    help="Rooms the server holds at once; a join that would open another gets too-many-rooms.",
)
@click.option(
    "--negotiation-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=_DEFAULTS.negotiation_timeout,
    show_envvar=True,
    help="Seconds a client may leave a server offer unanswered before it is removed "
    "(bye negotiation-timeout).",
)
@click.option(
    "--max-tracks-per-participant",
    type=click.IntRange(min=1),
    default=_DEFAULTS.max_tracks_per_participant,
    show_envvar=True,
    help="Tracks one participant may publish at once (an offer sending more is refused).",
)
@click.option(
    "--max-message-size",
    type=click.IntRange(min=1024),
    default=None,
    show_envvar=True,
    help="Largest signaling message accepted, in bytes; a larger one closes its WebSocket. "
    "Default: what the largest SDP of a full room needs (see docs/protocol.md, limits).",
)
@click.option(
    "--congestion-control/--no-congestion-control",
    default=_DEFAULTS.congestion_control,
    show_envvar=True,
    help="Choose subscribers' layers within their bandwidth estimates, pause what does not "
    "fit and pace. Off: the estimates are still made and reported (connectionQuality), but "
    "every subscriber gets the layers its settings allow, unpaced (a LAN, or to measure).",
)
def serve(
    host: str,
    port: int,
    ice_host: tuple[str, ...],
    ice_server: tuple[str, ...],
    ice_username: str | None,
    ice_credential: str | None,
    turn_url: tuple[str, ...],
    turn_secret: str | None,
    turn_secret_file: Path | None,
    turn_ttl: int,
    peer_timeout: float,
    keys_file: Path | None,
    insecure: bool,
    connect_timeout: float,
    join_timeout: float,
    resume_window: float,
    http_idle_timeout: float,
    udp_receive_buffer: int,
    workers: int,
    drain_timeout: float,
    redis_url: str | None,
    node_address: str | None,
    cluster_secret_file: Path | None,
    redis_prefix: str,
    udp_port: int | None,
    socket_per_participant: bool,
    log_format: LogFormat,
    log_level: str,
    max_participants: int,
    message_rate: float,
    message_burst: float,
    max_sockets_per_address: int,
    max_rooms: int,
    negotiation_timeout: float,
    max_tracks_per_participant: int,
    max_message_size: int | None,
    congestion_control: bool,
) -> None:
    """Serve signaling (WebSocket /ws) and media until SIGTERM or SIGINT."""
    configure_logging(log_format, log_level)
    keys = None if keys_file is None else read_keys(keys_file)
    if keys is None and not _is_loopback(host) and not insecure:
        raise click.UsageError(
            f"--host {host} serves beyond this machine, and without --keys-file anyone who "
            "reaches it can join any room: give --keys-file (see `sfu token keygen`), or "
            "--insecure if that is what you want"
        )
    if keys is None:
        log.warning(
            "INSECURE: no access keys (--keys-file): anyone who reaches this server may join "
            "any room, publish and subscribe",
            host=host,
        )
    if socket_per_participant and udp_port is not None:
        raise click.UsageError("--udp-port and --socket-per-participant exclude each other")
    if not socket_per_participant and udp_port is None:
        udp_port = 0
    turn = _turn_config(turn_url, turn_secret, turn_secret_file, turn_ttl)
    if turn is not None:
        log.info("clients get TURN credentials", turn_urls=list(turn.urls), ttl=turn.ttl)
    config = MediaConfig(
        ice_hosts=ice_host,
        ice_servers=tuple(IceServer(url, ice_username, ice_credential) for url in ice_server),
        peer_timeout=peer_timeout,
        connect_timeout=connect_timeout,
        udp_receive_buffer=udp_receive_buffer,
        udp_port=udp_port,
        max_participants_per_room=max_participants,
        max_rooms=max_rooms,
        negotiation_timeout=negotiation_timeout,
        max_tracks_per_participant=max_tracks_per_participant,
        congestion_control=congestion_control,
    )
    if max_message_size is None:
        max_message_size = max_signaling_message(config)
    cluster = _cluster_options(
        redis_url, node_address, cluster_secret_file, redis_prefix, f"ws://{host}:{port}/ws"
    )
    uvloop.run(
        _serve(
            config,
            host,
            port,
            max_message_size,
            join_timeout=join_timeout,
            resume_window=resume_window,
            http_idle_timeout=http_idle_timeout,
            keys=keys,
            message_rate=(message_rate, message_burst),
            max_sockets_per_address=max_sockets_per_address,
            turn=turn,
            workers=workers,
            drain_timeout=drain_timeout,
            cluster=cluster,
            log_format=log_format,
            log_level=log_level,
        )
    )


def _cluster_options(
    redis_url: str | None,
    node_address: str | None,
    secret_file: Path | None,
    prefix: str,
    public_url: str,
) -> ClusterOptions | None:
    """The cluster this node joins (None: none); UsageError when the options do not make one."""
    if redis_url is None:
        if node_address is not None or secret_file is not None:
            raise click.UsageError("--node-address and --cluster-secret-file go with --redis")
        return None
    if node_address is None or secret_file is None:
        raise click.UsageError("--redis needs --node-address and --cluster-secret-file")
    host, colon, port = node_address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.UsageError(f"--node-address {node_address!r}: expected HOST:PORT")
    try:
        lines = secret_file.read_text().splitlines()
    except OSError as exc:
        raise click.UsageError(f"--cluster-secret-file: {exc}") from None
    secret = (lines[0].strip() if lines else "").encode()
    if len(secret) < 16:
        raise click.UsageError("--cluster-secret-file: the secret is shorter than 16 bytes")
    return ClusterOptions(redis_url, node_address, secret, public_url, prefix)


def _turn_config(
    urls: tuple[str, ...], secret: str | None, secret_file: Path | None, ttl: int
) -> TurnConfig | None:
    """The TURN servers for clients; UsageError when the options do not make one."""
    if secret is not None and secret_file is not None:
        raise click.UsageError("give the TURN secret once: --turn-secret or --turn-secret-file")
    if secret_file is not None:
        try:
            secret = read_secret(secret_file)
        except (OSError, ValueError) as exc:
            raise click.UsageError(f"--turn-secret-file: {exc}") from None
    if not urls:
        if secret is not None:
            raise click.UsageError("a TURN secret without --turn-url: give the TURN servers")
        return None
    if not secret:
        raise click.UsageError(
            "--turn-url needs the TURN servers' shared secret: --turn-secret-file, "
            "SFU_TURN_SECRET or --turn-secret"
        )
    return TurnConfig(urls, secret, ttl)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


async def _serve(
    config: MediaConfig,
    host: str,
    port: int,
    max_message_size: int,
    *,
    join_timeout: float = DEFAULT_JOIN_TIMEOUT,
    resume_window: float = DEFAULT_RESUME_WINDOW,
    http_idle_timeout: float = HTTP_IDLE_TIMEOUT,
    keys: Mapping[str, str] | None = None,
    message_rate: tuple[float, float] = (DEFAULT_MESSAGE_RATE, DEFAULT_MESSAGE_BURST),
    max_sockets_per_address: int = DEFAULT_MAX_SOCKETS_PER_ADDRESS,
    turn: TurnConfig | None = None,
    workers: int = 1,
    drain_timeout: float = 0.0,
    cluster: ClusterOptions | None = None,
    log_format: LogFormat = "console",
    log_level: str = "info",
) -> None:
    limit = raise_file_limit()
    log.info(
        "file descriptor limit",
        soft=limit.soft,
        hard=limit.hard,
        started_with=limit.started_with,
    )
    if limit.soft < RECOMMENDED_FILE_LIMIT:
        log.warning(
            "file descriptor limit is low: each connection and each participant's media socket "
            "takes one",
            limit=limit.soft,
            fix=f"LimitNOFILE={RECOMMENDED_FILE_LIMIT} (systemd), ulimit -Hn; docs/operations.md",
        )
    set_ice_host_addresses(config.ice_hosts)
    granted = set_udp_receive_buffer(config.udp_receive_buffer)
    if granted < config.udp_receive_buffer:
        log.warning(
            "media sockets get a smaller receive buffer than asked for",
            asked=config.udp_receive_buffer,
            granted=granted,
            fix=f"sysctl -w net.core.rmem_max={config.udp_receive_buffer}",
        )
    try:
        assembly = await assemble(
            config, workers=workers, cluster=cluster, log_format=log_format, log_level=log_level
        )
    except (OSError, RuntimeError) as exc:
        raise click.ClickException(f"the media plane could not start: {exc}") from None
    app = create_app(
        assembly.service,
        max_message_size=max_message_size,
        join_timeout=join_timeout,
        resume_window=resume_window,
        metrics=assembly.registry,
        keys=keys,
        message_rate=message_rate,
        max_sockets_per_address=max_sockets_per_address,
        turn=turn,
        health=assembly.health,
        drain=assembly.drain,
        worker_metrics=assembly.worker_metrics,
        shutdown_reason=assembly.shutdown_reason,
    )

    async def start_media(_app: web.Application) -> None:
        await assembly.start()  # the shared UDP port, if any; closed with the service

    app.on_startup.append(start_media)
    assembly.serving()  # before the server's own tasks: their futures come and go
    # aiohttp's keep-alive timer also runs from the moment a connection is accepted, so it closes
    # a connection that never completes a first request as well (since aiohttp 3.14.4)
    runner = web.AppRunner(app, keepalive_timeout=http_idle_timeout)
    try:
        await runner.setup()  # runs on_startup
    except OSError as exc:
        await runner.cleanup()
        await assembly.close()
        raise click.ClickException(udp_port_taken(config, exc)) from None
    watcher = asyncio.create_task(watch_file_descriptors(limit.soft), name="fd-watcher")
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = _bound_port(runner, port)
        log.info("listening", host=host, port=bound_port, ice_hosts=list(config.ice_hosts))
        url_host = f"[{host}]" if ":" in host else host
        click.echo(f"aiosfu listening on http://{url_host}:{bound_port}")
        await _wait_for_signal(assembly.drain, drain_timeout)
        log.info("stopping")
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        # on_shutdown closes the rooms (clients are told bye) and the sockets
        await runner.cleanup()
        await assembly.close()  # the workers, the cluster's links and claims
    log.info("stopped")


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested


async def _wait_for_signal(drain: Drain, drain_timeout: float) -> None:
    """Until SIGTERM or SIGINT; with a drain timeout, then the drain until no session is left,
    the timeout passed, or a second signal came."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        if drain_timeout > 0:
            stop.clear()
            began = loop.time()
            await drain.start()  # the directory is told: its wait counts in the timeout
            end = await drain.finish(max(0.0, drain_timeout - (loop.time() - began)), stop)
            log.info("drained", end=end, seconds=round(loop.time() - began, 2), left=drain.sessions)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


main.add_command(token)

if __name__ == "__main__":
    main()
