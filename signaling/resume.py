"""Session resume: a joined participant's signaling outlives the WebSocket that joined it.

A WebSocket drops for reasons that say nothing about the call: a phone leaves Wi-Fi, a proxy
times out an idle connection, a laptop sleeps for a moment. The participant's peer connection
does not depend on it, so the server keeps the participant for the *resume window*: the room
sees no leave, media goes on, and every message the server sends the participant is numbered
(``seq``) and kept. A new WebSocket that sends ``resume`` with the token from ``joined`` takes
the session over: the reply ``resumed`` says how many of the client's messages the server had
read (the client sends the others again) and the kept messages the client missed follow, in
order. Without a resume in the window the participant leaves as if it had closed the socket.

A :class:`ParticipantLink` is that lasting half of a session; :class:`Resumption` finds links by
token. Both run on the event loop only; the link's lock makes the messages of a participant be
handled one at a time even while an old socket and its successor overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from sfu.api import Event, ParticipantSession, SessionClosed
from sfu.log import get_logger
from signaling.messages import JsonObject, ResumeGrant, event_message

#: Messages kept for a replay, and their size in all: what a client may have missed. A link
#: that must drop one its client cannot have received can no longer be resumed and leaves.
REPLAY_MESSAGES = 1024
REPLAY_BYTES = 8 * 1024 * 1024
#: While a socket is attached, messages older than this are dropped from the replay: a socket
#: that died without a word is noticed within the heartbeat (5 s ping, 2.5 s for the pong), so
#: what it may have swallowed is younger. Keeps an attached participant's replay small.
ATTACHED_KEEP = 20.0
#: Reason a participant leaves with when its resume window ran out (as for a closed socket).
EXPIRED_REASON = "disconnected"

log = get_logger()


class ResumeFailed(Exception):
    """``resume`` cannot continue this session (the client should join again)."""


class Sink(Protocol):
    """What a link delivers to: the WebSocket session attached to it."""

    def deliver(self, text: str) -> None:
        """Queue one serialized message for the socket."""

    def session_closed(self, reason: str) -> None:
        """The server ended the session (``bye`` was delivered): close the socket after it."""

    def taken_over(self) -> None:
        """Another socket resumed the session: close this one, which no longer speaks for it."""


class ParticipantLink:
    """One joined participant's signaling state that survives its WebSocket."""

    def __init__(self, resumption: Resumption, room: str) -> None:
        self.room = room
        self.participant: ParticipantSession | None = None
        self.token = ""
        #: client messages read since the join, on every socket of this session
        self.received = 0
        #: held while one client message is handled: never two at once, across sockets
        self.lock = asyncio.Lock()
        self.ended = False
        self._resumption = resumption
        self._seq = 0
        self._kept: deque[tuple[int, str, float]] = deque()  # (seq, text, when sent)
        self._kept_bytes = 0
        self._sink: Sink | None = None
        self._missed_from: int | None = None  # first seq sent while no socket was attached
        self._expiry: asyncio.TimerHandle | None = None
        self._closed_reason: str | None = None  # the server's bye, if it ended the session

    @property
    def participant_id(self) -> str:
        return "" if self.participant is None else self.participant.participant_id

    @property
    def last_seq(self) -> int:
        return self._seq

    def delivers_to(self, sink: Sink) -> bool:
        return self._sink is sink

    def grant(self) -> ResumeGrant | None:
        if not self._resumption.enabled or self.ended:
            return None
        return ResumeGrant(self.token, self._resumption.window)

    # --- out: every message the participant is sent after joined ---

    def on_event(self, event: Event) -> None:
        """The room's listener (synchronous, on the event loop)."""
        self.send(event_message(event))
        if isinstance(event, SessionClosed):
            self._closed_reason = event.reason
            self._end()
            if self._sink is not None:
                self._sink.session_closed(event.reason)

    def send(self, message: JsonObject) -> None:
        """Number, keep and (if a socket is attached) deliver one message. Kept: for a replay
        (resume on) and, before the first socket is attached, for it (events raised during the
        join follow ``joined``)."""
        self._seq += 1
        text = json.dumps({**message, "seq": self._seq}, separators=(",", ":"))
        if self._sink is None or self._resumption.enabled:
            self._keep(self._seq, text)
        if self._sink is not None:
            self._sink.deliver(text)

    def _keep(self, seq: int, text: str) -> None:
        now = self._resumption.clock()
        self._kept.append((seq, text, now))
        self._kept_bytes += len(text)
        kept = self._kept
        while len(kept) > 1 and (
            len(kept) > REPLAY_MESSAGES
            or self._kept_bytes > REPLAY_BYTES
            or (self._sink is not None and now - kept[0][2] > ATTACHED_KEEP)
        ):
            dropped, old, _ = kept.popleft()
            self._kept_bytes -= len(old)
            if self._missed_from is not None and dropped >= self._missed_from:
                log.info(
                    "resume impossible: missed messages over the limit",
                    room=self.room,
                    participant=self.participant_id,
                    kept=len(self._kept),
                )
                self._expire()
                return

    # --- sockets coming and going ---

    def attach(self, sink: Sink, after_seq: int) -> int:
        """Deliver to ``sink`` from now on, after the kept messages past ``after_seq``; returns
        how many of those there were. The socket attached before, if any, is released."""
        replay = [text for seq, text, _ in self._kept if seq > after_seq]
        old, self._sink = self._sink, sink
        if old is not None and old is not sink:
            old.taken_over()
        self._cancel_expiry()
        self._missed_from = None
        if not self._resumption.enabled:
            self._kept.clear()
            self._kept_bytes = 0
        for text in replay:
            sink.deliver(text)
        if self._closed_reason is not None:  # ended while joining: the bye was just replayed
            sink.session_closed(self._closed_reason)
        return len(replay)

    def missed(self, last_seq: int) -> int:
        """How many kept messages come after ``last_seq``."""
        return sum(1 for seq, _, _ in self._kept if seq > last_seq)

    def check_resume(self, last_seq: int) -> None:
        """ResumeFailed unless every message after ``last_seq`` is still kept."""
        if self.ended:
            raise ResumeFailed("the session has ended; join again")
        if last_seq > self._seq:
            raise ResumeFailed(f"lastSeq {last_seq} is past the last message sent ({self._seq})")
        oldest = self._kept[0][0] if self._kept else self._seq + 1
        if last_seq + 1 < oldest:
            raise ResumeFailed(
                f"messages after {last_seq} are no longer kept (oldest kept: {oldest}); join again"
            )

    def detach(self, sink: Sink) -> None:
        """``sink``'s socket closed without a leave: keep the participant for the window."""
        if self._sink is not sink or self.ended:
            return
        self._sink = None
        self._missed_from = self._seq + 1
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(self._resumption.window, self._expire)
        log.info(
            "waiting for resume",
            room=self.room,
            participant=self.participant_id,
            window=self._resumption.window,
            last_seq=self._seq,
        )

    def _expire(self) -> None:
        """No resume in time (or no longer possible): leave, as a closed socket did before."""
        if self.ended:
            return
        self._end()
        participant = self.participant
        if participant is not None:
            log.info("resume window over", room=self.room, participant=participant.participant_id)
            self._resumption.track(participant.leave(EXPIRED_REASON))

    def end(self) -> None:
        """The participant left (or was removed): the token is no longer good."""
        self._end()

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self._cancel_expiry()
        self._resumption.forget(self)

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None


class Resumption:
    """The links that can be resumed, by token. ``window`` 0: resume is off."""

    def __init__(
        self,
        window: float,
        token: Callable[[], str] = lambda: secrets.token_urlsafe(32),
        clock: Callable[[], float] = time.monotonic,
    ):
        self.window = window
        self.clock = clock
        self._new_token = token
        self._links: dict[str, ParticipantLink] = {}
        self._leaving: set[asyncio.Future[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.window > 0

    def __len__(self) -> int:
        return len(self._links)

    def link(self, room: str) -> ParticipantLink:
        """A link for a join in progress (registered by :meth:`register` once joined)."""
        return ParticipantLink(self, room)

    def register(self, link: ParticipantLink) -> None:
        """Give ``link`` a fresh token (the old one, if any, stops working)."""
        if not self.enabled or link.ended:
            return
        self._links.pop(link.token, None)
        link.token = self._new_token()
        self._links[link.token] = link

    def find(self, token: str) -> ParticipantLink | None:
        link = self._links.get(token)
        # the dict matched the token; compare again in constant time all the same
        if link is None or not secrets.compare_digest(link.token, token):
            return None
        return link

    def forget(self, link: ParticipantLink) -> None:
        if self._links.get(link.token) is link:
            del self._links[link.token]

    def track(self, leaving: Coroutine[Any, Any, None]) -> None:
        """Run a participant's leave in the background and keep it until done."""
        future = asyncio.ensure_future(leaving)
        self._leaving.add(future)
        future.add_done_callback(self._left)

    def _left(self, future: asyncio.Future[None]) -> None:
        self._leaving.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("leave after the resume window failed", exc_info=future.exception())

    async def close(self) -> None:
        """Server shutdown: no more resumes; wait for the leaves already under way."""
        for link in list(self._links.values()):
            link.end()
        if self._leaving:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._leaving, return_exceptions=True)
