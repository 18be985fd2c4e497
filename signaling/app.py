"""The aiohttp application: the signaling WebSocket, a health check and the static web client."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder

from sfu.api import RoomService, SfuError
from sfu.log import get_logger
from signaling.drain import Drain, DrainingRooms
from signaling.operator_api import add_routes
from signaling.resume import Resumption
from signaling.session import DEFAULT_MESSAGE_BURST, DEFAULT_MESSAGE_RATE, SignalingSession
from signaling.turn import TurnConfig

STATIC_DIR = Path(__file__).parent / "static"
#: /healthz statuses answered with 200 (``down`` and ``draining`` get 503)
HEALTHY = ("ok", "degraded")
SHUTDOWN_REASON = "server-shutdown"
DEFAULT_JOIN_TIMEOUT = 10.0
#: WebSockets one client address may hold open at once (a NAT or proxy puts many people
#: behind one; a load test many clients).
DEFAULT_MAX_SOCKETS_PER_ADDRESS = 500
#: Seconds a participant whose WebSocket dropped keeps its place, waiting for a resume.
DEFAULT_RESUME_WINDOW = 15.0

log = get_logger()


@dataclass(slots=True)
class SignalingState:
    max_message_size: int
    heartbeat: float
    join_timeout: float | None
    resumption: Resumption
    keys: Mapping[str, str] | None = None
    message_rate: tuple[float, float] = (DEFAULT_MESSAGE_RATE, DEFAULT_MESSAGE_BURST)
    max_sockets_per_address: int = DEFAULT_MAX_SOCKETS_PER_ADDRESS
    sockets_by_address: Counter[str] = field(default_factory=Counter)
    turn: TurnConfig | None = None
    sessions: set[SignalingSession] = field(default_factory=set)
    #: the bye reason when the server stops
    shutdown_reason: str = SHUTDOWN_REASON


SERVICE: web.AppKey[RoomService] = web.AppKey("service")
STATE = web.AppKey("signaling", SignalingState)
METRICS = web.AppKey("metrics", CollectorRegistry)
HEALTH: web.AppKey[Callable[[], Mapping[str, Any]]] = web.AppKey("health")
DRAIN = web.AppKey("drain", Drain)
WORKER_METRICS: web.AppKey[Callable[[int], str | None]] = web.AppKey("worker_metrics")


def create_app(
    service: RoomService,
    *,
    max_message_size: int = 262144,
    heartbeat: float = 5.0,
    join_timeout: float | None = DEFAULT_JOIN_TIMEOUT,
    resume_window: float = DEFAULT_RESUME_WINDOW,
    metrics: CollectorRegistry | None = None,
    keys: Mapping[str, str] | None = None,
    message_rate: tuple[float, float] = (DEFAULT_MESSAGE_RATE, DEFAULT_MESSAGE_BURST),
    max_sockets_per_address: int = DEFAULT_MAX_SOCKETS_PER_ADDRESS,
    turn: TurnConfig | None = None,
    health: Callable[[], Mapping[str, Any]] | None = None,
    drain: Drain | None = None,
    worker_metrics: Callable[[int], str | None] | None = None,
    shutdown_reason: str = SHUTDOWN_REASON,
) -> web.Application:
    """Serve ``GET /ws`` (signaling), ``GET /healthz``, ``GET /metrics`` if a Prometheus
    ``metrics`` registry is given, and, if present, the static web client.

    ``heartbeat``: seconds between WebSocket pings; a client that does not answer one within half
    of that is disconnected (and leaves its room). ``join_timeout``: seconds from opening the
    WebSocket to a successful ``join``; a socket without one by then gets ``bye`` with reason
    ``join-timeout`` and is closed (1008). ``None``: no limit. ``resume_window``: seconds a
    joined participant whose WebSocket closed without ``leave`` waits for a ``resume`` before it
    leaves its room (0: it leaves at once). ``keys``: the access tokens' keys by key id
    (signaling/tokens.py); a ``join`` then needs a token, and the operator API (``/api/``,
    signaling/operator_api.py) an admin token. ``None``: anyone may join any room.
    ``message_rate``: (messages per second, burst) one WebSocket's messages are handled at, at
    most (signaling/ratelimit.py). ``max_sockets_per_address``: open WebSockets from one client
    address; one more is refused (HTTP 429).
    ``turn``: TURN servers whose credentials each ``joined`` and ``resumed`` carry
    (signaling/turn.py). ``health``: more of ``/healthz`` (the workers, the cluster); its
    ``"status"`` (``degraded``, ``down``) replaces ``ok``, and ``down`` answers 503.
    ``drain``: once it started, a ``join`` for a room with no session here is refused
    (``server-draining``) and ``/healthz`` says ``draining`` with 503 (signaling/drain.py).
    ``worker_metrics``: worker k's metrics text, served as ``/metrics?worker=k``.
    ``shutdown_reason``: the ``bye`` reason when the server stops.
    """
    app = web.Application()
    app[DRAIN] = drain = drain or Drain()
    app[SERVICE] = DrainingRooms(service, drain)
    if health is not None:
        app[HEALTH] = health
    app[STATE] = SignalingState(
        max_message_size=max_message_size,
        heartbeat=heartbeat,
        join_timeout=join_timeout,
        resumption=Resumption(resume_window),
        keys=keys,
        message_rate=message_rate,
        max_sockets_per_address=max_sockets_per_address,
        turn=turn,
        shutdown_reason=shutdown_reason,
    )
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    add_routes(app, service, keys)
    if worker_metrics is not None:
        app[WORKER_METRICS] = worker_metrics
    if metrics is not None:
        app[METRICS] = metrics
        app.router.add_get("/metrics", prometheus_metrics)
    if STATIC_DIR.is_dir():
        if (STATIC_DIR / "index.html").is_file():
            app.router.add_get("/", index)
        app.router.add_static("/", STATIC_DIR)
    app.on_shutdown.append(_shutdown)
    return app


async def websocket(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    address = request.remote or ""
    if state.sockets_by_address[address] >= state.max_sockets_per_address:
        log.warning("too many sockets from one address", remote=address)
        return web.json_response(
            {
                "code": "too-many-connections",
                "message": f"{state.max_sockets_per_address} WebSockets from this address are "
                "open already",
            },
            status=429,
        )
    state.sockets_by_address[address] += 1
    try:
        return await _serve_websocket(request, state)
    finally:
        state.sockets_by_address[address] -= 1
        if not state.sockets_by_address[address]:
            del state.sockets_by_address[address]


async def _serve_websocket(request: web.Request, state: SignalingState) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=state.max_message_size, heartbeat=state.heartbeat)
    await ws.prepare(request)
    session = SignalingSession(
        ws,
        request.app[SERVICE],
        remote=request.remote,
        join_timeout=state.join_timeout,
        resumption=state.resumption,
        keys=state.keys,
        message_rate=state.message_rate,
        turn=state.turn,
    )
    state.sessions.add(session)
    try:
        await session.run()
    finally:
        state.sessions.discard(session)
    return ws


async def healthz(request: web.Request) -> web.Response:
    report: dict[str, Any] = {"status": "ok"}
    try:
        report.update(await request.app[SERVICE].stats())
    except SfuError as exc:  # no worker answers
        report.update(status="down", error=exc.message)
    health = request.app.get(HEALTH)
    if health is not None:
        report = {**report, **health()}
        if report["status"] == "ok" and "error" in report:
            report["status"] = "down"
    if request.app[DRAIN].draining and report["status"] != "down":
        report["status"] = "draining"  # 503 too: a load balancer sends no new client here
    return web.json_response(report, status=200 if report["status"] in HEALTHY else 503)


async def prometheus_metrics(request: web.Request) -> web.Response:
    """The registry in the exposition format the scraper asks for (text, or OpenMetrics);
    ``?worker=k``: worker k's own, as it gave it (text; no ``worker`` label)."""
    if "worker" in request.query:
        return _worker_metrics(request, request.query["worker"])
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(request.app[METRICS]), headers={"Content-Type": content_type})


def _worker_metrics(request: web.Request, worker: str) -> web.Response:
    exposition = request.app.get(WORKER_METRICS)
    if exposition is None:
        raise web.HTTPNotFound(
            text="this server runs no worker processes (--workers 1): its rooms are in the "
            "server process, whose metrics are /metrics\n"
        )
    text = exposition(int(worker)) if worker.isascii() and worker.isdigit() else None
    if text is None:
        raise web.HTTPNotFound(text=f"no worker {worker[:20]!r}: workers are numbered from 0\n")
    if not text:
        raise web.HTTPServiceUnavailable(
            text=f"worker {worker} is down or starting: no metrics now\n"
        )
    # the worker writes prometheus_client's generate_latest(): the 0.0.4 text format
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def _shutdown(app: web.Application) -> None:
    """Close every room (each participant's socket gets ``bye``), then the remaining sockets."""
    state = app[STATE]
    sessions = state.sessions
    log.info("shutting down", sessions=len(sessions), waiting_for_resume=len(state.resumption))
    try:
        await app[SERVICE].close(state.shutdown_reason)
    except Exception:
        log.exception("closing the room service failed")
    await state.resumption.close()
    # sessions that were told bye are closing already; the others (not joined) get it here
    reason = state.shutdown_reason
    await asyncio.gather(*(session.shutdown(reason) for session in list(sessions)))
