"""An aiortc client of the aiosfu signaling protocol (docs/protocol.md), for tests and load tests.

One WebSocket and one RTCPeerConnection (max-bundle) per client. The client is the impolite peer of
perfect negotiation: its own negotiations run one at a time, and a server ``offer`` that arrives
while a client offer awaits its answer is ignored (the server answers, then offers again).

A WebSocket that drops (closes without ``bye``, or stops answering pings) is resumed on a new one
within the server's resume window, with backoff; the peer connection is kept throughout, and the
application sees ``reconnecting`` and ``reconnected`` (how ``resumed``) in :attr:`SfuClient.events`.
When the session cannot be resumed (``resume-failed``, the window is over, or the server does not
resume), or the server says ``bye`` ``reconnect`` (it lost the session, not the room), the client
joins the same room again by itself (docs/protocol.md, "Resuming a session"):
the old peer connection closes (its remote tracks end), a new one publishes the same local tracks
with the same options, subscriptions and track settings are asked for again, and ``reconnected``
(how ``rejoined``) gives the new participant id. Calls waiting for a reply when the session was lost
raise :class:`SessionLost`; if joining again fails too, the client closes (``connection-closed``).

Received video is played out as a browser does (``sfu_client.playout``): each decoded frame is
returned by ``recv()`` at a render time taken from its RTP timestamp plus a playout delay that
adapts to the jitter and to the time NACK repairs take (tens of ms on a calm link, at most 0.5 s
by default), instead of the moment it was complete. ``playout_delay=False`` hands frames over
as soon as they are decoded, as aiortc does; audio is always handed over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription, candidate_from_sdp

from sfu.api import Kind, TrackInfo
from sfu.media.aiortc_bridge import (
    accept_transport_cc,
    begin_ice_restart,
    complete_ice_restart,
    ice_credentials,
    ice_restart_offered,
    local_descriptions,
    own_ice_connect,
    recover_at_keyframes,
    regather_ice,
    rollback_offer,
    send_srtp,
    set_ice_host_addresses,
    set_ice_servers,
    tap_rtp,
)
from sfu_client.playout import PlayoutConfig, PlayoutStats, PlayoutTrack
from sfu_client.reconnect import Backoff
from sfu_client.resume import ResumeState
from sfu_client.simulcast import DEFAULT_LAYERS, SimulcastPublisher
from sfu_client.simulcast_media import LayerSize, PreEncodedLayers
from sfu_client.transport_cc import TransportCcFeedback

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
DEFAULT_TIMEOUT = 10.0
#: The server's offers grow with the room (~1.2 KB per m-line; a full room has hundreds).
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
WS_CLOSE_TIMEOUT = 2.0
#: Seconds between the client's WebSocket pings; a pong missing for half of it is a drop.
WS_HEARTBEAT = 5.0
#: ``bye`` reason: the server lost this session (its worker went away), not the room
RECONNECT = "reconnect"
#: Backoff between attempts to resume: the first wait, and the longest.
RESUME_FIRST_WAIT = 0.1
RESUME_LONGEST_WAIT = 2.0
#: Joining again when a session cannot be resumed: at most this many attempts, within this many
#: seconds, the waits between them doubling from the first to the longest.
REJOIN_ATTEMPTS = 4
REJOIN_WITHIN = 10.0
REJOIN_FIRST_WAIT = 1.0
REJOIN_LONGEST_WAIT = 4.0
#: ``join`` refused by a server that is stopping: another URL (or, behind a load balancer,
#: another server) takes the room.
SERVER_DRAINING = "server-draining"
#: ``join`` refusals that may go away (a room at its limit, a server bug, a server that is
#: stopping): try again.
JOIN_RETRY_CODES = frozenset({"room-full", "internal-error", SERVER_DRAINING})

Predicate = Callable[["ServerMessage"], bool]


# --- values ---


@dataclass(frozen=True, slots=True)
class ServerMessage:
    """A message from the server, as parsed JSON, with its arrival time (``time.monotonic()``).

    The client adds messages of its own: ``{"type": "connection-closed", "reason": ...}``, as
    the last event once the connection is gone; ``{"type": "reconnecting"}`` when the WebSocket
    dropped and ``{"type": "reconnected", "how": "resumed", "participantId": ..., "replayed": N}``
    once a new one took the session over (same participant id, same peer connection), or
    ``{"type": "reconnected", "how": "rejoined", "participantId": NEW, "previousParticipantId":
    OLD, "reason": WHY_NOT_RESUMED}`` once the client joined again (a new session: new ids, new
    peer connection; local tracks published again, with new track ids). After a rejoin, others
    the client knew and no longer finds get ``{"type": "participant-left", "participantId": ...,
    "reason": "absent-after-rejoin"}``, and newcomers ``participant-joined``, as if the server
    had sent them.
    """

    type: str
    data: Mapping[str, Any]
    at: float

    @property
    def request_id(self) -> str | None:
        value = self.data.get("requestId")
        return value if isinstance(value, str) else None


@dataclass(slots=True)
class RemoteParticipant:
    participant_id: str
    name: str
    tracks: dict[str, TrackInfo] = field(default_factory=dict)


@dataclass(slots=True)
class RemoteTrack:
    """A remote track carried on one m-line (``mid``) of this client's connection.

    ``track`` is aiortc's receiving track: ``await remote.track.recv()`` returns decoded frames
    (video: a :class:`~sfu_client.playout.PlayoutTrack` over it, each frame at its render time,
    unless the client was made with ``playout_delay=False``).
    An m-line can later carry another remote track; this object then turns ``active=False`` and a
    new :class:`RemoteTrack` with the same ``track`` object takes its place.
    """

    participant_id: str
    track_id: str
    kind: Kind
    mid: str
    track: MediaStreamTrack
    source: str = "unknown"
    muted: bool = False
    active: bool = True
    offered_at: float = field(default_factory=time.monotonic)

    def drain(self) -> int:
        """Drop the frames decoded so far and not read yet; returns how many."""
        return _drain(self.track)

    @property
    def playout(self) -> PlayoutStats | None:
        """The video playout delay and its counters (None: not played out)."""
        return self.track.stats if isinstance(self.track, PlayoutTrack) else None


@dataclass(frozen=True, slots=True)
class SimulcastOptions:
    """How a track was published with simulcast (kept to publish it again after a rejoin)."""

    layers: tuple[LayerSize, ...]
    fps: float
    always_send_rid: bool


@dataclass(slots=True)
class LocalTrack:
    """A track this client publishes; ``track_id`` is the id the server gave it.

    After a rejoin the same object carries the track on the new connection: ``track_id``,
    ``mid``, ``transceiver`` and ``simulcast`` change, ``track`` stays.
    """

    track_id: str
    mid: str
    kind: Kind
    source: str
    track: MediaStreamTrack
    transceiver: RTCRtpTransceiver
    #: as ``set_muted`` left it, or as the operator's ``track-muted`` about it says
    muted: bool = False
    #: the layers' sender when published with simulcast (``set_active``, counters per layer)
    simulcast: SimulcastPublisher | None = None
    #: the codec names it was published with (``publish_many``), and its simulcast options
    codecs: tuple[str, ...] = ()
    simulcast_options: SimulcastOptions | None = None


class SfuClientError(Exception):
    pass


class ServerError(SfuClientError):
    """An ``error`` message from the server, raised on the call whose request caused it."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


class InvalidServerOffer(SfuClientError):
    """A server offer this client refused to apply (see ``SfuClient.errors``)."""


class ConnectionClosed(SfuClientError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"connection closed: {reason}")
        self.reason = reason


class SessionLost(SfuClientError):
    """The session this call belonged to could not be resumed: the client joins again by
    itself (``reconnected`` how ``rejoined`` follows, or ``connection-closed``). Requests are
    not carried over: their ids, offers and answers belonged to the lost session."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the session was lost ({reason}); joining again")
        self.reason = reason


@dataclass(slots=True)
class _Pending:
    expect: str  # the reply type that resolves it when the server omits the requestId
    future: asyncio.Future[ServerMessage]


# --- helpers ---


async def _ws_connect(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(
        url,
        max_msg_size=MAX_MESSAGE_SIZE,
        timeout=aiohttp.ClientWSTimeout(ws_close=WS_CLOSE_TIMEOUT),
        heartbeat=WS_HEARTBEAT,
    )


def _abort(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Drop ``ws``'s connection at once, without the closing handshake (aiohttp has no public
    abort; close() would wait for a peer that a dead network cannot reach)."""
    response = getattr(ws, "_response", None)
    if response is not None:
        response.close()


def _refused(exc: BaseException) -> bool:
    """Whether connecting failed because nothing listens there (ECONNREFUSED)."""
    while exc is not None:
        if isinstance(exc, ConnectionRefusedError):
            return True
        if isinstance(exc, aiohttp.ClientConnectorError):
            return isinstance(exc.os_error, ConnectionRefusedError)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _refusal(data: Mapping[str, Any], what: aiohttp.WSMsgType) -> str:
    """What a refused resume or join got back, for the application (no token in it)."""
    if data.get("type") == "error":
        return f"{data.get('code')}: {data.get('message')}"
    if data:
        return f"the server answered {data.get('type')}"
    return f"the server answered {what.name.lower()} (no reply)"


def ws_url(url: str) -> str:
    """``http://h:p`` → ``ws://h:p/ws``; a ws(s) URL with a path is kept as it is."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def pin_ice_to_loopback() -> None:
    """Gather ICE host candidates on 127.0.0.1 only (process-wide; see aiortc_bridge)."""
    set_ice_host_addresses(["127.0.0.1"])


def _ice_server(server: RTCIceServer | str) -> RTCIceServer:
    return server if isinstance(server, RTCIceServer) else RTCIceServer(urls=server)


def _server_ice_servers(data: Mapping[str, Any]) -> list[RTCIceServer]:
    """``iceServers`` of ``joined`` (TURN servers with this session's credentials)."""
    return [
        RTCIceServer(
            urls=[str(url) for url in entry["urls"]]
            if isinstance(entry["urls"], list)
            else str(entry["urls"]),
            username=None if entry.get("username") is None else str(entry["username"]),
            credential=None if entry.get("credential") is None else str(entry["credential"]),
        )
        for entry in data.get("iceServers") or ()
    ]


def _kind(value: object) -> Kind:
    if value == "audio":
        return "audio"
    if value == "video":
        return "video"
    raise ValueError(f"bad track kind {value!r}")


def _track_info(data: Mapping[str, Any], participant_id: str | None = None) -> TrackInfo:
    return TrackInfo(
        track_id=str(data["trackId"]),
        participant_id=str(data.get("participantId", participant_id)),
        kind=_kind(data["kind"]),
        source=str(data.get("source", "unknown")),
        muted=bool(data.get("muted", False)),
    )


def _mlines(sdp: str) -> list[tuple[str | None, str]]:
    """(mid, kind) of each m-line."""
    return [(m.rtp.muxId, m.kind) for m in SessionDescription.parse(sdp).media]


def _participant(data: Mapping[str, Any]) -> RemoteParticipant:
    pid = str(data["participantId"])
    tracks = (_track_info(t, pid) for t in data.get("tracks", ()))
    return RemoteParticipant(pid, str(data.get("name", "")), {t.track_id: t for t in tracks})


# --- the client ---


class SfuClient:
    """One participant. Create with :meth:`connect` (or :meth:`open` then :meth:`join`)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse,
        *,
        ice_servers: Sequence[RTCIceServer | str] = (),
        owns_session: bool = True,
        transport_cc: bool = True,
        url: str = "",
        playout_delay: PlayoutConfig | bool = True,
    ) -> None:
        self._session = session
        self._ws = ws
        self._url = url
        #: the servers (nodes of one cluster) this client may join through, the current first
        self.urls = [url]
        self._owns_session = owns_session
        self._configuration = RTCConfiguration(
            iceServers=[_ice_server(s) for s in ice_servers],
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        )
        #: the peer connection; a rejoin replaces it with a new one
        self.pc = RTCPeerConnection(self._configuration)
        #: the ICE (TURN) servers the last ``joined`` gave, used after :attr:`_configuration`'s
        self.server_ice_servers: list[RTCIceServer] = []
        self.room: str | None = None
        self.name: str | None = None
        self.token: str | None = None  # the access token of the last join
        self.participant_id: str | None = None
        self.participants: dict[str, RemoteParticipant] = {}
        self.local_tracks: dict[str, LocalTrack] = {}
        #: receive every track the others publish, except those unsubscribed from (see join)
        self.auto_subscribe = True
        self._choices: dict[str, bool] = {}  # track id -> subscribed, as asked
        self._settings: dict[str, dict[str, Any]] = {}  # track id -> its setTrackSettings
        #: every message received, in order; :attr:`events` gets the same messages as a stream
        #: (both grow without bound: a long-lived client should consume :attr:`events`).
        self.history: list[ServerMessage] = []
        self.events: asyncio.Queue[ServerMessage] = asyncio.Queue()
        #: errors the server reported that no call was waiting for, and failed server offers.
        self.errors: list[Exception] = []
        #: server offers not answered: in glare with an offer of ours, or refused as invalid.
        self.ignored_offers = 0
        self.close_reason: str | None = None
        #: how long :meth:`request` (join, offer, leave) waits for its reply.
        self.request_timeout = DEFAULT_TIMEOUT
        #: called on ``publisherLayers`` with (track id, {rid: active}): which simulcast layers
        #: of a published track somebody receives; a simulcast publisher stops encoding the rest.
        self.on_publisher_layers: Callable[[str, dict[str, bool]], None] | None = None
        #: answer the server's transport-cc and send feedback on what arrives (False: the
        #: server has only aiortc's REMB to estimate this client's downlink)
        self.transport_cc = transport_cc
        #: the feedback sender, once a server offer negotiated transport-cc
        self.transport_cc_feedback: TransportCcFeedback | None = None
        #: how received video is played out (``sfu_client.playout``); None: frames at once
        self.playout_delay = _playout_config(playout_delay)
        self._playout_tracks: dict[str, PlayoutTrack] = {}  # mid -> the one over its receiver
        #: resume a dropped WebSocket when the server allows it (False: a drop closes the client)
        self.auto_resume = True
        #: the resume token, the last seq handled and what was sent (sfu_client.resume)
        self.resume = ResumeState()
        #: how many times a new WebSocket resumed the session
        self.resumes = 0
        #: how many ICE restarts (restart_ice) found a new path
        self.ice_restarts = 0
        #: join again when the session cannot be resumed (False: close, as without auto_resume)
        self.auto_rejoin = True
        self._session_gone = False  # bye reconnect: nothing to resume, join again at once
        #: how many times the client joined again; the bounds of joining again
        self.rejoins = 0
        self.rejoin_attempts = REJOIN_ATTEMPTS
        self.rejoin_within = REJOIN_WITHIN
        self._reconnecting = False
        self._rejoining = False  # no session: requests fail, settings wait for the new one
        self._rejoin_task: asyncio.Task[None] | None = None
        self._generation = 0  # counts rejoins: the old session's offers and candidates are dropped
        self._refusal = ""  # why the last resume or join was refused
        self._server_restart: asyncio.Task[None] | None = None

        self._request_ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._offered: dict[str, Mapping[str, Any]] = {}  # mid -> the server offer's track entry
        self._remote_by_mid: dict[str, RemoteTrack] = {}
        self._simulcast: list[SimulcastPublisher] = []  # their m-lines' SDP is ours to edit
        self._negotiation = asyncio.Lock()
        self._own_offer_pending = False
        self._offers_sent = 0
        self._inbox: asyncio.Queue[tuple[ServerMessage, int, int]] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._close_task: asyncio.Task[None] | None = None
        self._expected_close: str | None = None
        self._reader = asyncio.create_task(self._read_loop(), name="sfu-client-reader")
        self._worker = asyncio.create_task(self._negotiation_loop(), name="sfu-client-negotiator")

    # --- lifecycle ---

    @classmethod
    async def open(
        cls,
        url: str | Sequence[str],
        *,
        ice_servers: Sequence[RTCIceServer | str] = (),
        ice_hosts: Sequence[str] | None = None,
        session: aiohttp.ClientSession | None = None,
        request_timeout: float = DEFAULT_TIMEOUT,
        transport_cc: bool = True,
        playout_delay: PlayoutConfig | bool = True,
    ) -> SfuClient:
        """Open the WebSocket without joining (``ice_hosts`` pins ICE process-wide).

        ``url``: the server, or several nodes of one cluster (tried in order here; joining
        again after a session was lost moves on to the next when one cannot be reached).

        ``request_timeout`` bounds the connection and every wait for a reply (join, offer, leave).
        ``transport_cc=False``: no transport-cc feedback (see :attr:`transport_cc`).
        ``playout_delay``: received video frames at their render time with an adaptive delay
        (True, or a :class:`~sfu_client.playout.PlayoutConfig`), or as soon as decoded (False).
        """
        if ice_hosts is not None:
            set_ice_host_addresses(ice_hosts)
        owns_session = session is None
        http = session or aiohttp.ClientSession()
        urls = [ws_url(url)] if isinstance(url, str) else [ws_url(u) for u in url]
        if not urls:
            raise ValueError("no server URL")
        try:
            for index, candidate in enumerate(urls):
                try:
                    async with asyncio.timeout(request_timeout):
                        ws = await _ws_connect(http, candidate)
                    break
                except (aiohttp.ClientError, OSError, TimeoutError):
                    if index == len(urls) - 1:
                        raise
                    logger.info("%s cannot be reached: trying the next URL", candidate)
            urls = urls[index:] + urls[:index]  # the one that answered first
        except BaseException:
            if owns_session:
                await http.close()
            raise
        client = cls(
            http,
            ws,
            ice_servers=ice_servers,
            owns_session=owns_session,
            transport_cc=transport_cc,
            url=urls[0],
            playout_delay=playout_delay,
        )
        client.urls = urls
        client.request_timeout = request_timeout
        return client

    @classmethod
    async def connect(
        cls,
        url: str | Sequence[str],
        room: str,
        name: str,
        *,
        ice_servers: Sequence[RTCIceServer | str] = (),
        ice_hosts: Sequence[str] | None = None,
        session: aiohttp.ClientSession | None = None,
        request_timeout: float = DEFAULT_TIMEOUT,
        auto_subscribe: bool = True,
        transport_cc: bool = True,
        token: str | None = None,
        playout_delay: PlayoutConfig | bool = True,
    ) -> SfuClient:
        """Open the WebSocket, join ``room`` as ``name`` and return once ``joined`` arrived
        (``token``: the access token a server with keys asks for). With several URLs, a
        server that refuses the join as ``server-draining`` (it is stopping) is left for the
        next."""
        urls = [url] if isinstance(url, str) else list(url)
        for attempt in range(1, max(len(urls), 1) + 1):
            client = await cls.open(
                urls,
                ice_servers=ice_servers,
                ice_hosts=ice_hosts,
                session=session,
                request_timeout=request_timeout,
                transport_cc=transport_cc,
                playout_delay=playout_delay,
            )
            try:
                await client.join(room, name, auto_subscribe=auto_subscribe, token=token)
                return client
            except ServerError as exc:
                await client.close()
                if exc.code != SERVER_DRAINING or attempt >= len(urls):
                    raise
                logger.info("%s is draining: trying the next URL", client.urls[0])
                urls = client.urls[1:] + client.urls[:1]
            except BaseException:
                await client.close()
                raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def join(
        self, room: str, name: str, *, auto_subscribe: bool = True, token: str | None = None
    ) -> None:
        """Join ``room``. ``auto_subscribe=False``: receive only what :meth:`subscribe` asks for.
        ``token``: the access token a server with keys asks for (docs/protocol.md, ``join``)."""
        self.room, self.name = room, name
        self.auto_subscribe = auto_subscribe
        self.token = token
        message: dict[str, Any] = {
            "type": "join",
            "v": PROTOCOL_VERSION,
            "room": room,
            "name": name,
        }
        if not auto_subscribe:
            message["autoSubscribe"] = False
        if token is not None:
            message["token"] = token
        await self.request(message, expect="joined")

    async def leave(self) -> None:
        """Send ``leave``, wait for ``left``, then close."""
        self._expected_close = "left"
        try:
            if not self.closed:
                await self.request({"type": "leave"}, expect="left")
        except (ConnectionClosed, SessionLost):
            pass
        finally:
            await self.close("left")

    async def close(self, reason: str = "closed") -> None:
        """Close the WebSocket and the peer connection at once, without ``leave``. Idempotent."""
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._shutdown(reason), name="sfu-client-close")
        await asyncio.shield(self._close_task)

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    async def _shutdown(self, reason: str) -> None:
        self._mark_closed(reason)
        self._worker.cancel()
        if self._server_restart is not None:
            self._server_restart.cancel()
        if self._rejoin_task is not None:
            self._rejoin_task.cancel()
            await asyncio.gather(self._rejoin_task, return_exceptions=True)
        # close() first: it ends the reader's receive() cleanly (a cancelled receive() makes
        # aiohttp drop the TCP connection without the closing handshake)
        with contextlib.suppress(Exception):
            await self._ws.close()
        await asyncio.wait({self._reader}, timeout=WS_CLOSE_TIMEOUT)
        self._reader.cancel()
        await asyncio.gather(self._reader, self._worker, return_exceptions=True)
        if self.transport_cc_feedback is not None:
            await self.transport_cc_feedback.stop()
        await self.pc.close()
        for local in self.local_tracks.values():
            local.track.stop()  # as aiortc did when it held them (see _Sent)
        for played in self._playout_tracks.values():
            played.stop()
        if self._owns_session:
            await self._session.close()

    def _mark_closed(self, reason: str) -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(ConnectionClosed(reason))
        self._pending.clear()
        for remote in self._remote_by_mid.values():
            remote.active = False
        message = ServerMessage("connection-closed", {"reason": reason}, time.monotonic())
        self.history.append(message)
        self.events.put_nowait(message)
        self._notify()

    # --- sending ---

    async def send(self, message: Mapping[str, Any]) -> None:
        await self.send_raw(json.dumps(message))

    async def send_raw(self, text: str) -> None:
        if self.closed:
            raise ConnectionClosed(self.close_reason or "closed")
        if self._rejoining:
            raise SessionLost(self._refusal or "disconnected")
        logger.debug("%s sends %.120s", self.name, text)
        resumable = self.participant_id is not None and self.resume.possible and self.auto_resume
        if resumable:
            self.resume.sent(text)  # sent again after a resume if the server did not read it
            if self._reconnecting:
                return
        try:
            await self._ws.send_str(text)
        except (ConnectionError, RuntimeError):
            if not resumable:
                raise
            # the socket is dropping: the reader resumes the session and sends it again

    async def request(self, message: Mapping[str, Any], *, expect: str) -> ServerMessage:
        """Send ``message`` with a requestId and return the reply; an ``error`` reply raises."""
        request_id = str(message.get("requestId") or f"c{next(self._request_ids)}")
        future: asyncio.Future[ServerMessage] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = _Pending(expect, future)
        try:
            await self.send({**message, "requestId": request_id})
            async with asyncio.timeout(self.request_timeout):
                return await future
        except TimeoutError:
            raise TimeoutError(f"no {expect!r} reply to {message.get('type')!r}") from None
        finally:
            self._pending.pop(request_id, None)

    # --- subscribing ---

    async def subscribe(self, track_ids: Sequence[str]) -> None:
        """Receive these tracks of others (a server offer delivers them)."""
        await self._subscription("subscribe", track_ids, True)

    async def unsubscribe(self, track_ids: Sequence[str]) -> None:
        """Stop receiving these tracks (a server offer sets their m-lines inactive)."""
        await self._subscription("unsubscribe", track_ids, False)

    async def _subscription(self, kind: str, track_ids: Sequence[str], subscribed: bool) -> None:
        # no reply on success: a ping-pong through a request that has one (none exists) is not
        # needed, an error arrives as an event and lands in self.errors
        for track_id in track_ids:
            self._choices[track_id] = subscribed
        if not self._rejoining:  # else asked for again once joined again
            await self.send({"type": kind, "trackIds": list(track_ids)})
        self._notify()

    def wants(self, track_id: str) -> bool:
        """Whether this client asked to receive ``track_id`` (explicitly or by auto-subscribe)."""
        return self._choices.get(track_id, self.auto_subscribe)

    async def set_track_settings(
        self,
        track_ids: Sequence[str],
        *,
        paused: bool = False,
        max_layer: int | None = None,
        max_width: int | None = None,
        max_height: int | None = None,
        max_temporal_layer: int | None = None,
    ) -> None:
        """Replace what this client wants of these received tracks (``setTrackSettings``); the
        defaults ask for the best layer. No reply: an error lands in :attr:`errors`."""
        message: dict[str, Any] = {"type": "setTrackSettings", "trackIds": list(track_ids)}
        if paused:
            message["paused"] = True
        limits = {
            "maxLayer": max_layer,
            "maxWidth": max_width,
            "maxHeight": max_height,
            "maxTemporalLayer": max_temporal_layer,
        }
        message.update({key: value for key, value in limits.items() if value is not None})
        settings = {key: value for key, value in message.items() if key not in ("type", "trackIds")}
        for track_id in track_ids:
            self._settings[track_id] = settings  # asked for again after a rejoin
        if not self._rejoining:
            await self.send(message)

    # --- publishing ---

    async def publish(
        self, track: MediaStreamTrack, source: str = "camera", *, simulcast: bool = False
    ) -> LocalTrack:
        """Send ``track`` on a new m-line; returns it with the track id the server gave it.
        ``simulcast``: as three VP8 layers (see :meth:`publish_simulcast`)."""
        if simulcast:
            return await self.publish_simulcast(track, source)
        (local,) = await self.publish_many([(track, source)])
        return local

    async def publish_simulcast(
        self,
        track: MediaStreamTrack,
        source: str = "camera",
        *,
        layers: Sequence[LayerSize] = DEFAULT_LAYERS,
        fps: float = 30.0,
        always_send_rid: bool = False,
    ) -> LocalTrack:
        """Send a video track as rid simulcast on one new m-line, as a browser does: each of
        ``layers`` (rid, size divided by scale, bitrate; default q 1/4, h 1/2, f full) is its own
        VP8 stream. ``track`` may be :class:`~sfu_client.simulcast_media.PreEncodedLayers`
        (sent without encoding; its rids are the layers). ``LocalTrack.simulcast`` controls
        the layers. Without simulcast in the server's answer, only the first layer is sent."""
        options = SimulcastOptions(tuple(layers), fps, always_send_rid)
        publisher = self._simulcast_publisher(track, options)
        async with self._negotiation:
            transceiver = publisher.attach(self.pc)
            self._simulcast.append(publisher)
            try:
                answer = await self._negotiate({transceiver: source})
            except BaseException:
                self._simulcast.remove(publisher)
                await publisher.close()
                raise
            ids = {str(e.get("mid")): str(e.get("trackId")) for e in answer.data.get("tracks", ())}
            mid = transceiver.mid
            if mid is None or mid not in ids:
                raise SfuClientError(f"the answer gave no track id to mid {mid}: {ids}")
            local = LocalTrack(
                ids[mid], mid, "video", source, track, transceiver, False, publisher, (), options
            )
            self.local_tracks[local.track_id] = local
            self._notify()
            return local

    @staticmethod
    def _simulcast_publisher(
        track: MediaStreamTrack, options: SimulcastOptions
    ) -> SimulcastPublisher:
        # a closing publisher stops its source: let it stop a _Sent, not the application's
        source = track if isinstance(track, PreEncodedLayers) else _Sent(track)
        return SimulcastPublisher(
            source, options.layers, fps=options.fps, always_send_rid=options.always_send_rid
        )

    async def publish_many(
        self, tracks: Sequence[tuple[MediaStreamTrack, str]], *, codecs: Sequence[str] = ()
    ) -> list[LocalTrack]:
        """Publish several ``(track, source)`` pairs in one offer (as a browser adding a camera
        and a microphone before negotiating does). ``codecs`` (e.g. ``["H264"]``) limits what
        is offered, in order of preference, to those codec names (per kind, when it has any)."""
        async with self._negotiation:
            add = self.pc.addTransceiver
            added = {add(_Sent(t), direction="sendonly"): (t, s) for t, s in tracks}
            for transceiver in added:
                _prefer_codecs(transceiver, codecs)
            answer = await self._negotiate({t: source for t, (_, source) in added.items()})
            ids = {str(e.get("mid")): str(e.get("trackId")) for e in answer.data.get("tracks", ())}
            published = []
            for transceiver, (track, source) in added.items():
                mid = transceiver.mid
                if mid is None or mid not in ids:
                    raise SfuClientError(f"the answer gave no track id to mid {mid}: {ids}")
                kind = _kind(track.kind)
                local = LocalTrack(ids[mid], mid, kind, source, track, transceiver)
                local.codecs = tuple(codecs)
                self.local_tracks[local.track_id] = local
                published.append(local)
            self._notify()
            return published

    async def unpublish(self, track_id: str) -> None:
        """Stop sending a published track (its m-line turns inactive) and renegotiate."""
        local = self.local_tracks.pop(track_id)
        if local.simulcast is not None:
            await local.simulcast.close()  # its m-line's offers still leave its a=ssrc out
        async with self._negotiation:
            local.transceiver.sender.replaceTrack(None)
            local.transceiver.direction = "inactive"
            await self._negotiate({})
        self._notify()

    async def set_muted(self, track_id: str, muted: bool) -> None:
        """Tell the others a published track is (un)muted; an error reply becomes an event."""
        local = self.local_tracks[track_id]
        local.muted = muted
        if self._rejoining:
            return  # sent once published again
        request_id = f"c{next(self._request_ids)}"
        await self.send(
            {"type": "mute", "trackId": track_id, "muted": muted, "requestId": request_id}
        )

    async def network_changed(self) -> float:
        """The host's addresses changed (Wi-Fi to mobile data, a VPN): the signaling connection
        is dropped and resumed on a new one, and ICE restarts on candidates of the addresses
        there are now (pin them first with ``set_ice_host_addresses`` where they are pinned).
        Returns the restart's seconds, as :meth:`restart_ice`."""
        _abort(self._ws)  # its TCP connection went with the old address: resume at once
        return await self.restart_ice(regather=True)

    async def restart_ice(self, *, regather: bool = False) -> float:
        """Restart ICE on the same peer connection (RFC 8445 §9; docs/protocol.md, ICE restart):
        an offer with new ICE credentials, then new connectivity checks. DTLS and SRTP keys,
        tracks and ids stay, and media goes on over the old path until the new one is chosen.
        What a client does when its network changed or its connection failed. Returns the
        seconds from the offer to the new pair; raises ConnectionError or TimeoutError when
        none came of it."""
        started = time.monotonic()
        async with self._negotiation:
            begin_ice_restart(self.pc, controlling=True)
            if regather:
                await regather_ice(self.pc)
            answer = await self._negotiate({})
        remote = ice_credentials(str(answer.data["sdp"]))
        if remote is None:
            raise ConnectionError("the server's answer has no ICE credentials")
        await complete_ice_restart(self.pc, remote)
        self.ice_restarts += 1
        self._emit("ice-restarted", {"by": "client"})
        return time.monotonic() - started

    async def _negotiate(self, new: Mapping[RTCRtpTransceiver, str]) -> ServerMessage:
        """One client offer/answer exchange; the caller holds the negotiation lock."""
        self._own_offer_pending = True
        self._offers_sent += 1
        before = local_descriptions(self.pc)
        try:
            await self.pc.setLocalDescription(await self._create_offer())
            sources = {t.mid: {"source": t.source} for t in self.local_tracks.values()}
            sources.update({t.mid: {"source": source} for t, source in new.items() if t.mid})
            sdp = self.pc.localDescription.sdp
            for publisher in self._simulcast:
                sdp = publisher.offer(sdp)
            try:
                answer = await self.request(
                    {"type": "offer", "sdp": sdp, "tracks": sources}, expect="answer"
                )
            except ServerError:
                # refused, nothing applied on the server: back to stable (JSEP §5.7), so the
                # server's next offer can be answered; the m-lines this offer added are gone
                rollback_offer(self.pc, before)
                raise
            for publisher in self._simulcast:  # before aiortc may start their senders
                publisher.apply_answer(str(answer.data["sdp"]))
            own_ice_connect(self.pc)  # before aiortc starts ICE: a restart may retry it
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=str(answer.data["sdp"]), type="answer")
            )
            self._keep_transport_cc()
            recover_at_keyframes(self.pc)
            return answer
        finally:
            self._own_offer_pending = False

    async def _create_offer(self) -> RTCSessionDescription:
        """An offer in which negotiated m-lines keep their payload types and extension ids.

        aiortc re-offers every m-line with its default payload types (opus 96, VP8 97/rtx 98),
        which silently changes them on m-lines the server offered with others (RFC 3264 §8.3.2:
        a payload type's mapping must not change during a session), as browsers never do.
        """
        settled = {
            t.mid: (list(t._codecs), list(t._headerExtensions))
            for t in self.pc.getTransceivers()
            if t.mid is not None and t._codecs and not t.stopped
        }
        offer = await self.pc.createOffer()
        description = SessionDescription.parse(offer.sdp)
        for transceiver in self.pc.getTransceivers():
            if transceiver.mid in settled:
                transceiver._codecs, transceiver._headerExtensions = settled[transceiver.mid]
        for media in description.media:
            if media.rtp.muxId in settled:
                codecs, extensions = settled[media.rtp.muxId]
                media.rtp.codecs, media.rtp.headerExtensions = codecs, extensions
                media.fmt = [codec.payloadType for codec in codecs]
        return RTCSessionDescription(sdp=str(description), type="offer")

    # --- receiving ---

    async def _read_loop(self) -> None:
        reason = "disconnected"
        try:
            while True:
                reason, dropped = await self._read(self._ws)
                if not dropped or not self.auto_resume or self._close_task is not None:
                    break
                if await self._reconnect():
                    continue
                if self._close_task is None:
                    reason = f"{reason}; {self._refusal}"
                break
        except Exception as exc:  # a bug here must not leave the client half alive
            logger.exception("reader failed")
            reason = f"reader failed: {exc!r}"
        if self._close_task is None:
            reason = self._expected_close or reason
            self._close_task = asyncio.create_task(self._shutdown(reason), name="sfu-client-close")

    async def _reconnect(self) -> bool:
        """Resume the session, else join again: False when neither worked (``_refusal``)."""
        gone, self._session_gone = self._session_gone, False
        resumable = self.resume.possible and not gone
        if resumable or (self.auto_rejoin and self.participant_id is not None):
            self._emit("reconnecting", {})
        not_resumed = (
            "the server lost the session" if gone else "the server does not resume sessions"
        )
        if resumable:
            if await self._resume_session():
                return True
            not_resumed = self._refusal or "the resume window is over"
        if not self.auto_rejoin or self.participant_id is None or self._close_task is not None:
            self._refusal = "resume failed" if resumable else not_resumed
            return False
        if await self._rejoin(not_resumed):
            return True
        self._refusal = f"could not resume ({not_resumed}) nor join again ({self._refusal})"
        return False

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> tuple[str, bool]:
        """Read ``ws`` to its end: (why it ended, whether that was a drop to resume from)."""
        closing = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
        while True:
            message = await ws.receive()
            if message.type == aiohttp.WSMsgType.TEXT:
                bye = self._on_text(message.data)
                if bye == RECONNECT:  # the session is gone, the room not: join it again now
                    self._session_gone = True
                    return bye, self.auto_rejoin
                if bye is not None:
                    return bye, False
            elif message.type == aiohttp.WSMsgType.ERROR:
                return f"websocket error: {ws.exception()}", True
            elif message.type in closing:
                break
        if ws.close_code == 1000 and self._expected_close == "left":
            return "left", False
        # another socket resumed this session (someone else holds the token): not ours to take
        if message.type == aiohttp.WSMsgType.CLOSE and message.extra == "resumed":
            return "resumed elsewhere", False
        return "disconnected", True

    async def _resume_session(self) -> bool:
        """Take the session over from a new WebSocket, with backoff, within the window."""
        self._reconnecting = True
        self._refusal = ""
        backoff = Backoff(
            asyncio.get_running_loop().time,
            first=RESUME_FIRST_WAIT,
            longest=RESUME_LONGEST_WAIT,
            within=self.resume.window,
        )
        try:
            while self._close_task is None:
                outcome = await self._try_resume(min(self.request_timeout, backoff.remaining()))
                if outcome is not None:
                    return outcome
                wait = backoff.next_wait()
                if wait is None:
                    return False
                await asyncio.sleep(wait)
            return False
        finally:
            self._reconnecting = False

    async def _try_resume(self, timeout: float) -> bool | None:  # noqa: ASYNC109
        """One attempt: True resumed, False refused (join again), None try again later."""
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            async with asyncio.timeout(timeout):
                ws = await _ws_connect(self._session, self._url)
                await ws.send_str(json.dumps(self.resume.message()))
                reply = await ws.receive()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.info("%s: resume attempt failed: %r", self.name, exc)
            if ws is not None:
                await ws.close()
            if ws is None and len(self.urls) > 1 and _refused(exc):
                # nothing listens where the session lived (its node is gone), and other nodes
                # were given: join again through them rather than wait out the resume window
                self._refusal = "the session's node cannot be reached"
                self.urls = self.urls[1:] + self.urls[:1]
                self._url = self.urls[0]
                return False
            return None
        data = json.loads(reply.data) if reply.type == aiohttp.WSMsgType.TEXT else {}
        if data.get("type") == "resumed":
            again = self.resume.to_send_again(int(data["received"]))
            if again is not None:
                self.resume.granted(data)
                self._ws = ws
                self.resumes += 1
                self._reconnecting = False
                for text in again:
                    await self.send_raw(text)
                self._emit(
                    "reconnected",
                    {
                        "how": "resumed",
                        "participantId": self.participant_id,
                        "replayed": data.get("replayed"),
                    },
                )
                return True
            logger.warning("%s: resumed, but what it sent is no longer kept", self.name)
            self._refusal = "what the server had not read of ours is no longer kept"
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(json.dumps({"type": "leave"}))  # end it: we join anew
        else:
            logger.info("%s: resume refused: %s", self.name, data or reply.type)
            self._refusal = _refusal(data, reply.type)
        await ws.close()
        if data.get("type") == "error" and data.get("code") != "resume-failed":
            return None  # not a refusal of the session (a limit, a busy server): try again
        return False

    # --- joining again (the session could not be resumed) ---

    async def _rejoin(self, not_resumed: str) -> bool:
        """Join again in a task of its own (it needs this reader for its replies); True once
        a new WebSocket is this client's, False when joining again failed."""
        adopted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        task = self._rejoin_task = asyncio.create_task(
            self._rejoin_session(not_resumed, adopted), name="sfu-client-rejoin"
        )
        either: list[asyncio.Future[Any]] = [adopted, task]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if adopted.done():
            return adopted.result()
        self._refusal = "cancelled"
        with contextlib.suppress(asyncio.CancelledError):
            self._refusal = f"failed: {task.exception()!r}"
        return False

    async def _rejoin_session(self, not_resumed: str, adopted: asyncio.Future[bool]) -> None:
        """End the lost session, join the same room again, publish the same tracks again and
        ask again for what this client chose to receive; then ``reconnected`` (rejoined)."""
        self._rejoining = True
        self._fail_pending(SessionLost(not_resumed))
        previous = self.participant_id
        async with self._negotiation:  # the calls that were negotiating have failed: they let go
            await self._end_session()
            joined = await self._join_again()
            if joined is None:
                adopted.set_result(False)
                return
            self._adopt(*joined)
            adopted.set_result(True)  # the reader goes on with the new WebSocket
            try:
                await self._publish_again()
                await self._choose_again()
            except (SfuClientError, TimeoutError) as exc:
                if not self._rejoining:  # else this session was lost too: the next rejoin goes on
                    logger.warning("%s: joined again, but restoring it failed: %r", self, exc)
                    self.errors.append(exc)
        if self._rejoining:
            return
        self.rejoins += 1
        data = {"previousParticipantId": previous, "reason": not_resumed}
        self._emit("reconnected", {"how": "rejoined", "participantId": self.participant_id, **data})

    def _fail_pending(self, error: Exception) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self._pending.clear()

    async def _end_session(self) -> None:
        """Close the old peer connection (its remote tracks end); the local tracks stay live."""
        self._generation += 1
        _abort(self._ws)  # dropped already; its connection goes now
        self.resume = ResumeState()
        self._own_offer_pending = False
        if self._server_restart is not None:
            self._server_restart.cancel()
        for local in self.local_tracks.values():
            if local.simulcast is not None:
                await local.simulcast.close()
        self._simulcast = []
        remotes = list(self._remote_by_mid.values())
        for remote in remotes:
            remote.active = False
        self._remote_by_mid, self._offered = {}, {}
        if self.transport_cc_feedback is not None:
            await self.transport_cc_feedback.stop()
            self.transport_cc_feedback = None
        await self.pc.close()
        for remote in remotes:
            remote.track.stop()  # "ended" for the application (aiortc ends only those it decoded)
        for played in self._playout_tracks.values():
            played.stop()
        self._playout_tracks = {}
        self._notify()

    async def _join_again(self) -> tuple[aiohttp.ClientWebSocketResponse, str] | None:
        """``join`` on new WebSockets with backoff: the one that joined and its ``joined``."""
        backoff = Backoff(
            asyncio.get_running_loop().time,
            first=REJOIN_FIRST_WAIT,
            longest=REJOIN_LONGEST_WAIT,
            within=self.rejoin_within,
            attempts=self.rejoin_attempts,
        )
        join: dict[str, Any] = {"type": "join", "v": PROTOCOL_VERSION, "room": self.room}
        join["name"] = self.name
        if not self.auto_subscribe:
            join["autoSubscribe"] = False
        if self.token is not None:
            join["token"] = self.token  # a token past its expiry is refused: join fails
        while self._close_task is None:
            outcome = await self._try_join(join, min(self.request_timeout, backoff.remaining()))
            if isinstance(outcome, tuple):
                return outcome
            if outcome is False:
                return None
            wait = backoff.next_wait()
            if wait is None:
                return None
            await asyncio.sleep(wait)
        return None

    async def _try_join(
        self,
        join: Mapping[str, Any],
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[aiohttp.ClientWebSocketResponse, str] | bool | None:
        """One attempt: the WebSocket and its ``joined``, False refused, None try again later."""
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            async with asyncio.timeout(timeout):
                ws = await _ws_connect(self._session, self._url)
                await ws.send_str(json.dumps(join))
                reply = await ws.receive()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.info("%s: join attempt failed: %r", self.name, exc)
            self._refusal = f"join attempt failed: {exc!r}"
            if ws is not None:
                await ws.close()
            if ws is None and len(self.urls) > 1:  # that node is gone: the next one
                self.urls = self.urls[1:] + self.urls[:1]
                self._url = self.urls[0]
            return None
        data = json.loads(reply.data) if reply.type == aiohttp.WSMsgType.TEXT else {}
        if data.get("type") == "joined":
            return ws, str(reply.data)
        await ws.close()
        self._refusal = _refusal(data, reply.type)
        logger.info("%s: join again refused: %s", self.name, self._refusal)
        if data.get("code") == SERVER_DRAINING and len(self.urls) > 1:  # it is stopping: the next
            self.urls = self.urls[1:] + self.urls[:1]
            self._url = self.urls[0]
        retry = data.get("type") != "error" or data.get("code") in JOIN_RETRY_CODES
        return None if retry else False

    def _adopt(self, ws: aiohttp.ClientWebSocketResponse, joined: str) -> None:
        """The new session: its WebSocket, a new peer connection, the room as ``joined`` says."""
        self._ws = ws
        self.pc = RTCPeerConnection(self._configuration)
        known = self.participants
        self.participants = {}
        self._on_text(joined)  # sets the participant id, the resume grant and the participants
        for participant_id in known.keys() - self.participants.keys():
            reason = "absent-after-rejoin"
            self._emit("participant-left", {"participantId": participant_id, "reason": reason})
        entries = {str(e.get("participantId")): e for e in self._joined_participants(joined)}
        for participant_id in self.participants.keys() - known.keys():
            self._emit("participant-joined", {"participant": entries[participant_id]})
        self._rejoining = False
        self._refusal = ""

    @staticmethod
    def _joined_participants(joined: str) -> list[Mapping[str, Any]]:
        entries = json.loads(joined).get("participants") or []
        return [e for e in entries if isinstance(e, Mapping)]

    async def _publish_again(self) -> None:
        """The same tracks with the same options, in one offer, on the new connection (the
        caller holds the negotiation lock); each keeps its LocalTrack, with a new track id."""
        again = list(self.local_tracks.values())
        if not again:
            return
        added: dict[RTCRtpTransceiver, LocalTrack] = {}
        for local in again:
            options = local.simulcast_options
            if options is not None:
                publisher = self._simulcast_publisher(local.track, options)
                transceiver = publisher.attach(self.pc)
                self._simulcast.append(publisher)
                local.simulcast = publisher
            else:
                transceiver = self.pc.addTransceiver(_Sent(local.track), direction="sendonly")
                _prefer_codecs(transceiver, local.codecs)
            local.transceiver = transceiver
            added[transceiver] = local
        self.local_tracks = {}  # their old ids and mids mean nothing to the new session
        try:
            answer = await self._negotiate({t: local.source for t, local in added.items()})
        except BaseException:
            self.local_tracks = {local.track_id: local for local in again}  # next rejoin
            raise
        ids = {str(e.get("mid")): str(e.get("trackId")) for e in answer.data.get("tracks", ())}
        for transceiver, local in added.items():
            mid = transceiver.mid
            if mid is None or mid not in ids:
                raise SfuClientError(f"the answer gave no track id to mid {mid}: {ids}")
            local.track_id, local.mid = ids[mid], mid
            self.local_tracks[local.track_id] = local
        for local in again:
            if local.muted:
                await self.set_muted(local.track_id, True)
        self._notify()

    async def _choose_again(self) -> None:
        """Ask again for the subscriptions and track settings of tracks still published (the
        server forgot them with the old session); forget those of tracks gone."""
        published = {t for p in self.participants.values() for t in p.tracks}
        self._choices = {t: c for t, c in self._choices.items() if t in published}
        self._settings = {t: c for t, c in self._settings.items() if t in published}
        for kind, subscribed in (("subscribe", True), ("unsubscribe", False)):
            ids = [t for t, c in self._choices.items() if c == subscribed]
            if ids and subscribed != self.auto_subscribe:
                await self.send({"type": kind, "trackIds": ids})
        groups: dict[str, list[str]] = {}
        for track_id, settings in self._settings.items():
            groups.setdefault(json.dumps(settings, sort_keys=True), []).append(track_id)
        for key, ids in groups.items():
            await self.send({"type": "setTrackSettings", "trackIds": ids, **json.loads(key)})

    def _emit(self, kind: str, data: Mapping[str, Any]) -> None:
        """A message of the client's own, in :attr:`history` and :attr:`events`."""
        message = ServerMessage(kind, {"type": kind, **data}, time.monotonic())
        self.history.append(message)
        self.events.put_nowait(message)
        self._notify()

    def _on_text(self, text: str) -> str | None:
        """Handle one server message; returns the reason when it was ``bye``."""
        try:
            data = json.loads(text)
        except ValueError:
            logger.warning("server sent bad JSON: %.200s", text)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            logger.warning("server sent a message without a type: %.200s", text)
            return None
        if not self.resume.received(data):
            return None  # handled before the socket dropped
        message = ServerMessage(data["type"], data, time.monotonic())
        self.history.append(message)
        self.events.put_nowait(message)
        try:
            self._dispatch(message)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("malformed %s message: %r (%s)", message.type, data, exc)
            self.errors.append(SfuClientError(f"malformed {message.type} message: {exc!r}"))
        self._notify()
        return str(data.get("reason", "bye")) if message.type == "bye" else None

    def _dispatch(self, message: ServerMessage) -> None:
        kind, data = message.type, message.data
        if kind == "joined":
            # here, not when join() resumes: the room's next events are read before that
            self._on_joined(data)
        if self._resolve_pending(message):
            return
        if kind == "offer":
            if self._own_offer_pending:
                self.ignored_offers += 1
                logger.debug("ignoring a server offer: own offer outstanding")
            else:
                self._inbox.put_nowait((message, self._offers_sent, self._generation))
        elif kind == "candidate":
            self._inbox.put_nowait((message, self._offers_sent, self._generation))
        elif kind == "participant-joined":
            participant = _participant(data["participant"])
            self.participants[participant.participant_id] = participant
        elif kind == "participant-left":
            participant_id = str(data["participantId"])
            self.participants.pop(participant_id, None)
            self._drop_remote(lambda entry: entry.get("participantId") == participant_id)
        elif kind == "track-published":
            info = _track_info(data["track"])
            publisher = self.participants.get(info.participant_id)
            if publisher is not None:
                publisher.tracks[info.track_id] = info
            self._sync_remote_tracks()
        elif kind == "track-unpublished":
            track_id = str(data["trackId"])
            publisher = self.participants.get(str(data["participantId"]))
            if publisher is not None:
                publisher.tracks.pop(track_id, None)
            self._drop_remote(lambda entry: str(entry.get("trackId")) == track_id)
        elif kind == "track-muted":
            self._on_track_muted(str(data["participantId"]), str(data["trackId"]), data["muted"])
        elif kind == "publisherLayers":
            self._on_publisher_layers(data)
        elif kind == "error":
            error = ServerError(str(data.get("code")), str(data.get("message")), message.request_id)
            logger.info("server error: %s", error)
            self.errors.append(error)

    def _on_publisher_layers(self, data: Mapping[str, Any]) -> None:
        layers = {str(layer["rid"]): bool(layer["active"]) for layer in data["layers"]}
        local = self.local_tracks.get(str(data["trackId"]))
        if local is not None and local.simulcast is not None:
            local.simulcast.set_layers(layers)  # stop encoding what nobody receives
        hook = self.on_publisher_layers
        if hook is None:
            return
        try:
            hook(str(data["trackId"]), layers)
        except Exception as exc:  # the hook is other code: it must not stop the reader
            logger.exception("on_publisher_layers failed")
            self.errors.append(exc)

    def _on_joined(self, data: Mapping[str, Any]) -> None:
        self.resume.granted(data)
        self.participant_id = str(data["participantId"])
        for entry in data.get("participants", ()):
            participant = _participant(entry)
            self.participants[participant.participant_id] = participant
        self._use_server_ice(_server_ice_servers(data))

    def _use_server_ice(self, servers: list[RTCIceServer]) -> None:
        """joined's ICE servers, after the application's own, for this session's (new) peer
        connection; aioice uses the first TURN server it can (docs/protocol.md, ``joined``)."""
        self.server_ice_servers = servers
        if not servers:
            return
        if self.pc.getTransceivers():
            logger.warning("%s: joined's iceServers came after the transport was made", self)
            return
        set_ice_servers(self.pc, [*(self._configuration.iceServers or ()), *servers])

    def _resolve_pending(self, message: ServerMessage) -> bool:
        """Settle the request this message replies to (by requestId, else by reply type)."""
        request_id = message.request_id
        pending = self._pending.get(request_id) if request_id is not None else None
        if pending is None and request_id is None:
            pending = next((p for p in self._pending.values() if p.expect == message.type), None)
        if pending is None or pending.future.done():
            return False
        if pending.expect == "answer":
            # a server offer after this reply is no longer in glare with ours: apply it (once
            # _negotiate, still holding the lock, has applied the answer)
            self._own_offer_pending = False
        if message.type == "error":
            pending.future.set_exception(
                ServerError(
                    str(message.data.get("code")), str(message.data.get("message")), request_id
                )
            )
        else:
            pending.future.set_result(message)
        return True

    def _drop_remote(self, predicate: Callable[[Mapping[str, Any]], bool]) -> None:
        """Forget the offered m-lines whose track entry matches (until the next server offer)."""
        self._offered = {mid: e for mid, e in self._offered.items() if not predicate(e)}
        self._sync_remote_tracks()

    def _on_track_muted(self, participant_id: str, track_id: str, muted: object) -> None:
        if participant_id == self.participant_id:  # the operator (un)muted a track of ours
            local = self.local_tracks.get(track_id)
            if local is not None:
                local.muted = bool(muted)
            return
        participant = self.participants.get(participant_id)
        info = participant.tracks.get(track_id) if participant else None
        if participant is not None and info is not None:
            participant.tracks[track_id] = TrackInfo(
                info.track_id, info.participant_id, info.kind, info.source, bool(muted)
            )
        self._sync_remote_tracks()

    async def _negotiation_loop(self) -> None:
        while True:
            message, offers_sent, generation = await self._inbox.get()
            async with self._negotiation:
                try:
                    if generation != self._generation:
                        pass  # of a session lost since: nothing of it applies to this one
                    elif message.type == "candidate":
                        await self._add_candidate(message.data)
                    elif offers_sent != self._offers_sent:
                        # an offer of ours went out after this one arrived: the server drops it
                        self.ignored_offers += 1
                    else:
                        await self._answer(message)
                except Exception as exc:  # aiortc raises its own errors for SDP it rejects
                    if self.closed:
                        return
                    # aiortc's own errors are unexpected here: their traceback says where
                    logger.warning(
                        "applying the server's %s failed: %r",
                        message.type,
                        exc,
                        exc_info=not isinstance(exc, SfuClientError),
                    )
                    self.errors.append(exc)
            self._notify()

    async def _answer(self, offer: ServerMessage) -> None:
        sdp = str(offer.data["sdp"])
        self._check_extends_session(sdp)
        # the server restarts ICE (its side of the path went silent): a new session, we answer
        restart = ice_credentials(sdp) if ice_restart_offered(self.pc, sdp) else None
        if restart is not None:
            begin_ice_restart(self.pc, controlling=False)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        own_ice_connect(self.pc)  # ICE starts with our answer: a restart may retry it
        self._keep_transport_cc()
        recover_at_keyframes(self.pc)
        self._offered = dict(offer.data.get("tracks") or {})
        self._sync_remote_tracks()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        answer = self.pc.localDescription.sdp
        for publisher in self._simulcast:
            answer = publisher.answer(answer, sdp)
        await self.send({"type": "answer", "sdp": answer})
        if restart is not None:
            self._server_restart = asyncio.create_task(self._complete_restart(restart))

    async def _complete_restart(self, remote: tuple[str, str]) -> None:
        try:
            await complete_ice_restart(self.pc, remote)
        except (ConnectionError, TimeoutError) as exc:
            logger.warning("%s: the server's ICE restart found no path: %r", self.name, exc)
            return
        self.ice_restarts += 1
        self._emit("ice-restarted", {"by": "server"})

    def _keep_transport_cc(self) -> None:
        """After a remote description: keep transport-cc where the server sends, and start the
        feedback the first time it is negotiated."""
        if not self.transport_cc:
            return
        ext_id = accept_transport_cc(self.pc)
        if not ext_id:
            return
        feedback = self.transport_cc_feedback
        if feedback is None:
            transports = (t.receiver.transport for t in self.pc.getTransceivers())
            dtls = next((d for d in transports if d is not None), None)
            if dtls is None:
                return
            feedback = self.transport_cc_feedback = TransportCcFeedback(
                lambda data: send_srtp(dtls, data), ext_id
            )
            tap_rtp(dtls, feedback.on_rtp)
            feedback.start()
        feedback.ext_id = ext_id

    def _check_extends_session(self, sdp: str) -> None:
        """Refuse an offer that drops or reorders negotiated m-lines (JSEP 5.2.2): aiortc would
        apply it to the wrong transceivers. A server offer it has abandoned looks like this."""
        local = self.pc.localDescription
        if local is None:
            return
        negotiated = _mlines(local.sdp)
        description = SessionDescription.parse(sdp)
        offered = [(m.rtp.muxId, m.kind) for m in description.media]
        problem = None
        if offered[: len(negotiated)] != negotiated:
            problem = f"m-lines {offered} do not extend the negotiated ones {negotiated}"
        ours = {t.mid for t in self.local_tracks.values()}
        for media in description.media:
            if media.rtp.muxId in ours and media.direction in ("sendonly", "sendrecv"):
                problem = f"it would send on m-line {media.rtp.muxId}, which this client sends on"
        if problem is not None:
            self.ignored_offers += 1
            raise InvalidServerOffer(f"server offer refused: {problem}")

    async def _add_candidate(self, data: Mapping[str, Any]) -> None:
        line = data.get("candidate")
        if not line:
            await self.pc.addIceCandidate(None)
            return
        candidate = candidate_from_sdp(str(line).removeprefix("candidate:"))
        candidate.sdpMid = data.get("sdpMid")
        candidate.sdpMLineIndex = data.get("sdpMLineIndex")
        await self.pc.addIceCandidate(candidate)

    def _sync_remote_tracks(self) -> None:
        """Bring :attr:`remote_tracks` in line with the latest server offer's ``tracks`` map."""
        receivers = {t.mid: t.receiver for t in self.pc.getTransceivers() if t.mid is not None}
        for mid, remote in list(self._remote_by_mid.items()):
            entry = self._offered.get(mid)
            if entry is None or str(entry.get("trackId")) != remote.track_id:
                remote.active = False
                del self._remote_by_mid[mid]
                _drain(remote.track)  # frames of the old track must not reach the new one
        for mid, entry in self._offered.items():
            receiver = receivers.get(mid)
            if receiver is None or receiver.track is None:
                continue
            current = self._remote_by_mid.get(mid)
            if current is None:
                current = RemoteTrack(
                    participant_id=str(entry["participantId"]),
                    track_id=str(entry["trackId"]),
                    kind=_kind(entry["kind"]),
                    mid=mid,
                    track=self._played_out(mid, receiver.track),
                )
                self._remote_by_mid[mid] = current
            participant = self.participants.get(current.participant_id)
            info = participant.tracks.get(current.track_id) if participant else None
            if info is not None:
                current.source, current.muted = info.source, info.muted

    def _played_out(self, mid: str, track: MediaStreamTrack) -> MediaStreamTrack:
        """The track the application reads for ``mid``: video through a playout track."""
        if self.playout_delay is None or track.kind != "video":
            return track
        played = self._playout_tracks.get(mid)
        if played is None or played.source is not track:
            if played is not None:
                played.stop()
            played = self._playout_tracks[mid] = PlayoutTrack(track, self.playout_delay)
        return played

    @property
    def remote_tracks(self) -> dict[str, RemoteTrack]:
        """The remote tracks the connection currently carries, by track id."""
        return {r.track_id: r for r in self._remote_by_mid.values()}

    # --- waiting ---

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # the waits take a timeout so that tests fail with a message saying what did not happen

    async def wait_until(
        self,
        condition: Callable[[], bool],
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
        what: str = "",
    ) -> None:
        """Wait until ``condition()`` holds; re-checked after every message and state change."""
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    if self.closed:
                        raise ConnectionClosed(self.close_reason or "closed")
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"{self.name}: timed out after {timeout} s waiting {what}") from None

    async def wait_connected(self, timeout: float = DEFAULT_TIMEOUT) -> None:  # noqa: ASYNC109
        """Until the peer connection is connected (ICE and DTLS up); ConnectionError if it
        fails or closes first, TimeoutError after ``timeout``."""
        done = asyncio.Event()

        def on_change() -> None:
            if self.pc.connectionState in ("connected", "failed", "closed"):
                done.set()

        on_change()
        self.pc.on("connectionstatechange", on_change)
        try:
            async with asyncio.timeout(timeout):
                await done.wait()
        finally:
            self.pc.remove_listener("connectionstatechange", on_change)
        if self.pc.connectionState != "connected":
            raise ConnectionError(f"{self.name}: peer connection {self.pc.connectionState}")

    async def wait_for(
        self,
        predicate: Predicate,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
        *,
        since: int = 0,
    ) -> ServerMessage:
        """The first message in :attr:`history` (from index ``since``) matching ``predicate``."""
        found: list[ServerMessage] = []
        position = since

        def match() -> bool:
            nonlocal position
            found.extend(m for m in self.history[position:] if predicate(m))
            position = len(self.history)
            return bool(found)

        await self.wait_until(match, timeout, "for a matching message")
        return found[0]

    async def wait_for_message(
        self,
        type_: str,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
        **fields: Any,
    ) -> ServerMessage:
        """The first message of ``type_`` whose top-level fields equal ``fields``."""

        def predicate(m: ServerMessage) -> bool:
            return m.type == type_ and all(m.data.get(k) == v for k, v in fields.items())

        try:
            return await self.wait_for(predicate, timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.name}: no {type_} {fields} within {timeout} s") from None

    async def wait_for_track(
        self,
        participant_id: str,
        kind: Kind,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    ) -> RemoteTrack:
        """The first active remote track of ``kind`` published by ``participant_id``."""
        found: list[RemoteTrack] = []

        def match() -> bool:
            found[:] = [
                r
                for r in self._remote_by_mid.values()
                if r.participant_id == participant_id and r.kind == kind
            ]
            return bool(found)

        await self.wait_until(match, timeout, f"for a {kind} track of {participant_id}")
        return found[0]

    async def wait_for_subscriptions(
        self,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    ) -> None:
        """Wait until every track of the others this client wants is carried by an m-line."""

        def settled() -> bool:
            carried = {r.track_id for r in self._remote_by_mid.values()}
            published = {t for p in self.participants.values() for t in p.tracks if self.wants(t)}
            return published <= carried

        await self.wait_until(settled, timeout, "for the subscriptions to settle")

    async def wait_for_participant(
        self,
        name: str,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    ) -> RemoteParticipant:
        found: list[RemoteParticipant] = []

        def match() -> bool:
            found[:] = [p for p in self.participants.values() if p.name == name]
            return bool(found)

        await self.wait_until(match, timeout, f"for participant {name!r}")
        return found[0]

    def __repr__(self) -> str:
        return f"<SfuClient {self.name!r} {self.participant_id} room={self.room!r}>"


class _Sent(MediaStreamTrack):
    """What aiortc's sender holds in place of the application's track. aiortc stops the track
    it sends when its connection ends (the server closing DTLS, or close()); a track that a
    rejoin sends again on a new connection must outlive the old one, so aiortc stops this."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        return await self.source.recv()


def _prefer_codecs(transceiver: RTCRtpTransceiver, names: Sequence[str]) -> None:
    """Offer only the named codecs (and their RTX) on ``transceiver``, if it has any of them."""
    capabilities = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    wanted = [name.lower() for name in names]
    chosen = [c for name in wanted for c in capabilities if c.name.lower() == name]
    if chosen:
        rtx = [c for c in capabilities if c.name.lower() == "rtx"]
        transceiver.setCodecPreferences(chosen + rtx)


def _playout_config(value: PlayoutConfig | bool) -> PlayoutConfig | None:
    if isinstance(value, PlayoutConfig):
        return value
    return PlayoutConfig() if value else None


def _drain(track: MediaStreamTrack) -> int:
    """Drop the decoded frames queued in an aiortc receiving track (keeps an end marker), and
    those a playout track over it holds."""
    if isinstance(track, PlayoutTrack):
        return track.drain() + _drain(track.source)
    queue = getattr(track, "_queue", None)
    if not isinstance(queue, asyncio.Queue):
        return 0
    dropped = 0
    ended = False
    with contextlib.suppress(asyncio.QueueEmpty):
        while True:
            frame = queue.get_nowait()
            ended = ended or frame is None
            dropped += frame is not None
    if ended:
        queue.put_nowait(None)
    return dropped
