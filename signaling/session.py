"""One signaling WebSocket: client messages in, calls on the room, replies and events out.

Reading and dispatching happen in the connection's handler task, one message at a time, so the calls
on a :class:`~sfu.api.ParticipantSession` never overlap. Everything the server sends goes through an
unbounded-but-capped queue drained by a writer task: the room's listener only enqueues, so a slow
client never blocks the room.

Ordering: events go out in the order the room raises them, interleaved with replies as they
happen. The one exception is ``join``: events raised before it returns wait until ``joined`` is
sent. A server offer raised while a client offer is being handled must not be held back like that:
it is the offer the server abandons (glare), which the client ignores only if it arrives before the
answer.

After ``joined`` (or ``resumed``) everything goes through the participant's
:class:`~signaling.resume.ParticipantLink`, which numbers and keeps it, so that a WebSocket that
drops without ``leave`` leaves the participant waiting for a ``resume`` on another socket instead
of leaving the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from sfu.api import FULL_GRANTS, RoomService, SfuError
from sfu.log import get_logger
from signaling.messages import (
    AnswerMessage,
    Candidate,
    ClientMessage,
    Join,
    JsonObject,
    Leave,
    Mute,
    Offer,
    ProtocolError,
    Resume,
    SetTrackSettings,
    Subscribe,
    Unsubscribe,
    answer_message,
    bye_message,
    error_message,
    joined_message,
    left_message,
    parse_client_message,
    resumed_message,
)
from signaling.ratelimit import TokenBucket
from signaling.resume import ParticipantLink, ResumeFailed, Resumption
from signaling.tokens import Access, TokenError, verify
from signaling.turn import TurnConfig, ice_servers

#: Messages waiting for a client that does not read; past this the connection is closed (1008).
OUTBOX_LIMIT = 4096
#: How long closing waits for queued messages and the close handshake before cutting the socket.
CLOSE_TIMEOUT = 5.0
#: Messages one connection may send per second, and in a burst, before it is slowed down.
DEFAULT_MESSAGE_RATE = 50.0
DEFAULT_MESSAGE_BURST = 200.0

#: ``bye`` reason and close reason for a connection that did not join in time.
JOIN_TIMEOUT_REASON = "join-timeout"


@dataclass(frozen=True, slots=True)
class _Close:
    """Queued after the last message: the writer closes the socket when it gets here."""

    code: WSCloseCode
    reason: str


_Outgoing = str | _Close  # a serialized message, or the end


class SignalingSession:
    """The protocol for one WebSocket; :meth:`run` returns when the socket is closed."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        service: RoomService,
        *,
        remote: str | None = None,
        join_timeout: float | None = None,
        resumption: Resumption | None = None,
        keys: Mapping[str, str] | None = None,
        message_rate: tuple[float, float] = (DEFAULT_MESSAGE_RATE, DEFAULT_MESSAGE_BURST),
        turn: TurnConfig | None = None,
    ) -> None:
        self._ws = ws
        self._service = service
        self._keys = keys  # access tokens' keys by key id; None: joins need no token
        self._message_rate = message_rate  # (per second, burst): signaling/ratelimit.py
        self._turn = turn  # the TURN servers clients get credentials for; None: no TURN
        # an unjoined socket holds a file descriptor and costs nothing to open: it gets this long
        self._join_timeout = join_timeout
        self._join_deadline = 0.0
        self._log = get_logger(remote=remote)
        self._outbox: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._resumption = resumption if resumption is not None else Resumption(0)
        self._link: ParticipantLink | None = None  # once joined or resumed, until taken over
        self._left = False

    @property
    def participant_id(self) -> str | None:
        return None if self._link is None else self._link.participant_id

    async def run(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="signaling-writer")
        if self._join_timeout is not None:
            self._join_deadline = asyncio.get_running_loop().time() + self._join_timeout
        self._log.info("connected")
        try:
            await self._read_loop()
        finally:
            link = self._link
            if link is not None and not self._left:
                if link.ended or not self._resumption.enabled:
                    await self._leave_once("disconnected")
                else:
                    link.detach(self)  # the participant waits for a resume
            self._send(_Close(WSCloseCode.OK, ""))
            await self._finish()
            self._log.info("disconnected", close_code=self._ws.close_code)
            structlog.contextvars.unbind_contextvars("room", "participant")

    async def shutdown(self, reason: str) -> None:
        """Tell the client ``bye`` (unless a close is already queued) and close the socket."""
        self._send(bye_message(reason))
        self._send(_Close(WSCloseCode.GOING_AWAY, reason))
        await self._finish()

    # --- reading ---

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        bucket = TokenBucket(*self._message_rate, loop.time())
        while not self._closing:
            try:
                msg = await self._receive()
            except TimeoutError:
                self._close_unjoined()
                return
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                wait = bucket.take(loop.time())
                if wait:  # a flood: read no faster than the rate (TCP pushes back on it)
                    if bucket.delayed == 1:
                        self._log.info(
                            "messages over the rate: slowed down", rate=self._message_rate[0]
                        )
                    await asyncio.sleep(wait)
                await self._handle_frame(msg.data if msg.type is WSMsgType.TEXT else None)
            elif msg.type is WSMsgType.ERROR:
                self._log.info("websocket error", error=str(msg.data))
                return
            else:  # close, closing, closed
                return

    async def _receive(self) -> WSMessage:
        """The next message; TimeoutError once the time to join is over."""
        left = self._time_to_join()
        if left is None:
            return await self._ws.receive()
        # not receive(timeout=...): that starts again after each pong, and clients answer pings
        async with asyncio.timeout(left):
            return await self._ws.receive()

    def _time_to_join(self) -> float | None:
        """Seconds left to join (raises TimeoutError when none are), or None once joined.

        Only the wait for a message counts: a join in progress is never cut short.
        """
        if self._link is not None or self._join_timeout is None:
            return None
        left = self._join_deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError
        return left

    def _close_unjoined(self) -> None:
        self._log.info("closing: no join in time", join_timeout=self._join_timeout)
        self._send(bye_message(JOIN_TIMEOUT_REASON))
        self._send(_Close(WSCloseCode.POLICY_VIOLATION, JOIN_TIMEOUT_REASON))

    async def _handle_frame(self, text: str | None) -> None:
        """One data frame (``None``: binary). A joined session counts each frame it reads, so
        that a ``resumed`` can tell the client which of its messages arrived."""
        link = self._link
        if link is None:
            await self._handle_text(text)
            return
        async with link.lock:
            if self._link is not link:  # another socket resumed the session meanwhile
                return
            link.received += 1
            await self._handle_text(text)

    async def _handle_text(self, text: str | None) -> None:
        if text is None:
            self._reply_error("invalid-message", "binary frames are not supported", None)
            return
        try:
            message = parse_client_message(text)
        except ProtocolError as exc:
            self._reply_error(exc.code, exc.message, exc.request_id)
            return
        try:
            await self._dispatch(message)
        except (ProtocolError, SfuError) as exc:
            self._reply_error(exc.code, exc.message, message.request_id)
        except Exception:
            self._log.exception("failed to handle message", message_type=message.type)
            self._reply_error(
                "internal-error", "the server failed on this message", message.request_id
            )

    def _reply_error(self, code: str, message: str, request_id: str | None) -> None:
        self._log.info("error reply", code=code, reason=message)
        self._send(error_message(code, message, request_id))

    # --- dispatching ---

    async def _dispatch(self, message: ClientMessage) -> None:
        if isinstance(message, Join):
            await self._join(message)
            return
        if isinstance(message, Resume):
            await self._resume(message)
            return
        link = self._link
        participant = None if link is None else link.participant
        if participant is None:
            raise ProtocolError("not-joined", f"send join before {message.type}")
        match message:
            case Offer():
                answer = await participant.offer(message.sdp, message.sources())
                self._send(answer_message(answer, message.request_id))
            case AnswerMessage():
                await participant.answer(message.sdp)
            case Candidate():
                await participant.add_ice_candidate(
                    message.candidate, message.sdp_mid, message.sdp_mline_index
                )
            case Mute():
                await participant.set_muted(message.track_id, message.muted)
            case Subscribe():
                await participant.subscribe(message.track_ids, True)
            case Unsubscribe():
                await participant.subscribe(message.track_ids, False)
            case SetTrackSettings():
                await participant.set_track_settings(message.track_ids, message.settings())
            case Leave():
                await self._leave_once()
                self._send(left_message(message.request_id))
                self._send(_Close(WSCloseCode.OK, "left"))

    async def _join(self, message: Join) -> None:
        if self._link is not None:
            raise ProtocolError(
                "already-joined", f"this connection already joined as {self.participant_id}"
            )
        # bound before the call so that tasks the room starts for this participant log the room
        access = self._admit(message)
        name = message.name if access is None or access.name is None else access.name
        structlog.contextvars.bind_contextvars(room=message.room)
        link = self._resumption.link(message.room)
        try:
            participant, others = await self._service.join(
                message.room,
                name,
                link.on_event,
                message.auto_subscribe,
                identity=None if access is None else access.identity,
                grants=FULL_GRANTS if access is None else access.grants,
            )
        except BaseException:
            structlog.contextvars.unbind_contextvars("room")
            raise
        link.participant = participant
        self._resumption.register(link)
        self._link = link
        self._bind(link)
        self._log.info("joined", name=name, identity=access and access.identity, others=len(others))
        self._enqueue(
            joined_message(
                message.room,
                participant.participant_id,
                others,
                message.request_id,
                link.grant(),
                ice_servers(self._turn, participant.participant_id, time.time()),
            )
        )
        link.attach(self, 0)  # events raised during the join follow joined

    def _admit(self, message: Join) -> Access | None:
        """The access the join's token gives (None: the server has no keys, anyone may join);
        ProtocolError ``token-required``, ``token-invalid``, ``token-expired`` or
        ``token-wrong-room`` when it gives none to this room."""
        if self._keys is None:
            return None
        if message.token is None:
            raise ProtocolError(
                "token-required", "this server admits only joins with an access token (token)"
            )
        try:
            access = verify(message.token, self._keys)
        except TokenError as exc:
            raise ProtocolError(exc.code, exc.message) from None
        if access.room != message.room:
            raise ProtocolError(
                "token-wrong-room", f"the token does not admit to room {message.room!r}"
            )
        return access

    async def _resume(self, message: Resume) -> None:
        if self._link is not None:
            raise ProtocolError(
                "already-joined", f"this connection already joined as {self.participant_id}"
            )
        link = self._resumption.find(message.token)
        if link is None:
            raise ProtocolError(
                "resume-failed",
                "no session to resume with this token (it ended, or its resume window is over);"
                " join again",
            )
        async with link.lock:  # a message the old socket is still handling finishes first
            try:
                link.check_resume(message.last_seq)
            except ResumeFailed as exc:
                raise ProtocolError("resume-failed", str(exc)) from None
            self._resumption.register(link)  # a used token is not good twice
            self._link = link
            structlog.contextvars.bind_contextvars(room=link.room)
            self._bind(link)
            missed = link.missed(message.last_seq)
            self._log.info("resumed", last_seq=message.last_seq, missed=missed)
            self._enqueue(
                resumed_message(
                    link.room,
                    link.participant_id,
                    link.grant(),
                    link.received,
                    missed,
                    message.request_id,
                    # fresh credentials: the join's may be near their end
                    ice_servers(self._turn, link.participant_id, time.time()),
                )
            )
            link.attach(self, message.last_seq)

    def _bind(self, link: ParticipantLink) -> None:
        structlog.contextvars.bind_contextvars(participant=link.participant_id)
        self._log = self._log.bind(room=link.room, participant=link.participant_id)

    async def _leave_once(self, reason: str = "left") -> None:
        link = self._link
        participant = None if link is None else link.participant
        if link is None or participant is None or self._left:
            return
        self._left = True
        link.end()
        try:
            await participant.leave(reason)
        except Exception:
            self._log.exception("leave failed")
        else:
            self._log.info("left")

    # --- writing ---

    # the link's sink (signaling.resume.Sink)

    def deliver(self, text: str) -> None:
        self._enqueue(text)

    def session_closed(self, reason: str) -> None:
        self._log.info("session closed by server", reason=reason)
        self._enqueue(_Close(WSCloseCode.OK, reason))

    def taken_over(self) -> None:
        self._log.info("session resumed on another connection")
        self._link = None
        self._enqueue(_Close(WSCloseCode.OK, "resumed"))

    def _send(self, item: JsonObject | _Close) -> None:
        """A reply, error or the end; once joined, messages are numbered and kept by the link."""
        link = self._link
        if isinstance(item, dict) and link is not None and link.delivers_to(self):
            link.send(item)  # numbered and kept; comes back through deliver()
        else:
            self._enqueue(item)

    def _enqueue(self, item: JsonObject | str | _Close) -> None:
        if self._closing:
            return
        if isinstance(item, dict):
            item = json.dumps(item, separators=(",", ":"))
        if isinstance(item, _Close):
            self._closing = True
        elif self._outbox.qsize() >= OUTBOX_LIMIT:
            self._log.warning("client does not read; closing", pending=self._outbox.qsize())
            while not self._outbox.empty():
                self._outbox.get_nowait()
            item = _Close(WSCloseCode.POLICY_VIOLATION, "slow-consumer")
            self._closing = True
        self._outbox.put_nowait(item)

    async def _write_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            if isinstance(item, _Close):
                await self._ws.close(code=item.code, message=item.reason.encode()[:120])
                return
            try:
                await self._ws.send_str(item)
            except ConnectionError as exc:
                self._log.info("send failed", error=str(exc))
                self._closing = True
                return

    async def _finish(self) -> None:
        """Wait (bounded) for the writer to send what is queued and close the socket."""
        writer = self._writer
        if writer is not None:
            done, _ = await asyncio.wait({writer}, timeout=CLOSE_TIMEOUT)
            if not done:
                writer.cancel()
                await asyncio.wait({writer})
            if not writer.cancelled() and writer.exception() is not None:
                self._log.error("writer failed", exc_info=writer.exception())
        if not self._ws.closed:
            # on timeout, close() is cancelled and drops the transport itself
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._ws.close(code=WSCloseCode.GOING_AWAY, drain=False), CLOSE_TIMEOUT
                )
