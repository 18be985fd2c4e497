"""A room service at the other end of a stream: the supervisor's half of the api boundary.

:class:`RemoteRoomService` is a :class:`~sfu.api.RoomService` whose rooms live in another
process (a worker) or on another node, served there by a :class:`~sfu.remote.host.ServiceHost`.
Each call is a request frame and waits for its reply; event frames are read in order and handed
to their session's listener at once, before any later reply resolves its call — so an event
raised during a call reaches the listener before the call returns, as in-process. A session id
(``sid``) is chosen here before ``join``, so the events of a session that is just joining find
their listener. A cancelled call's late reply is dropped.

When the stream ends (the worker died, the link broke), every session gets
:class:`~sfu.api.SessionClosed` ``reconnect`` (its client should join again: the room may be
somewhere else by then) and every call waiting raises :class:`~sfu.api.SfuError`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import structlog

from sfu import api
from sfu.remote import wire
from sfu.remote.frames import FrameError, read_frame, write_frame

log = structlog.get_logger("sfu.remote")

T = TypeVar("T")

#: SessionClosed's reason when the room service's process or node went away.
RECONNECT = "reconnect"


class RemoteRoomService:
    """The room service served at the other end of ``reader``/``writer``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._ids = itertools.count(1)
        self._sids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._listeners: dict[str, api.EventListener] = {}
        self._closed = False
        #: frames that are neither an event nor a reply (a worker's ``load`` reports)
        self.on_notice: Callable[[Mapping[str, Any]], None] | None = None
        #: called once when the stream ends
        self.on_lost: Callable[[], None] | None = None
        self._reading = asyncio.ensure_future(self._read())

    @property
    def closed(self) -> bool:
        """The stream ended: every call raises, no session is left."""
        return self._closed

    async def _read(self) -> None:
        try:
            while (frame := await read_frame(self._reader)) is not None:
                self._dispatch(frame)
                if "id" in frame:
                    # a reply: its caller goes on before the frames after it are handed out, as
                    # in-process (a server offer raised after an answer must reach the client
                    # after that answer; read from one buffer, it came first, and a client
                    # whose own offer still awaited its answer ignored it: negotiation-timeout)
                    await asyncio.sleep(0)
        except (FrameError, ConnectionError) as exc:
            log.warning("room service stream broken", error=str(exc))
        finally:
            self._lost()

    def _dispatch(self, frame: Mapping[str, Any]) -> None:
        if "event" in frame:
            sid = frame.get("sid")
            listener = self._listeners.get(sid) if isinstance(sid, str) else None
            if listener is None or not isinstance(sid, str):
                return  # a session that left meanwhile
            try:
                event: api.Event = wire.decode(frame["event"], wire.EVENTS)
            except wire.WireError as exc:
                log.error("room service event unreadable", error=str(exc))
                return
            if isinstance(event, api.SessionClosed):
                del self._listeners[sid]
            listener(event)
            return
        call_id = frame.get("id")
        if call_id is None and "op" in frame:
            if self.on_notice is not None:
                self.on_notice(frame)
            return
        future = self._pending.pop(call_id, None) if isinstance(call_id, int) else None
        if future is None or future.done():
            return  # cancelled meanwhile
        if "err" in frame:
            try:
                future.set_exception(wire.decode_error(frame["err"]))
            except wire.WireError as exc:
                future.set_exception(
                    api.SfuError(f"the room service's error was unreadable: {exc}")
                )
        else:
            future.set_result(frame.get("ok"))

    def _lost(self) -> None:
        if self._closed:
            return
        self._closed = True
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(api.SfuError("the room service went away"))
        listeners, self._listeners = self._listeners, {}
        for listener in listeners.values():
            listener(api.SessionClosed(RECONNECT))
        self._writer.close()
        if self.on_lost is not None:
            self.on_lost()

    async def call(self, op: str, args: Mapping[str, Any], sid: str | None = None) -> Any:
        """One request and its reply's value; its error raised as the api's class."""
        if self._closed:
            raise api.SfuError("the room service went away")
        call_id = next(self._ids)
        frame: dict[str, Any] = {"id": call_id, "op": op, "args": args}
        if sid is not None:
            frame["sid"] = sid
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            write_frame(self._writer, frame)
            await self._writer.drain()
            return await future
        except ConnectionError:
            raise api.SfuError("the room service went away") from None
        finally:
            self._pending.pop(call_id, None)

    async def aclose(self) -> None:
        """End the stream (the host's sessions leave); sessions here get ``reconnect``."""
        self._writer.close()
        await self._reading

    # --- RoomService ---

    async def join(
        self,
        room_id: str,
        name: str,
        listener: api.EventListener,
        auto_subscribe: bool = True,
        *,
        identity: str | None = None,
        grants: api.Grants = api.FULL_GRANTS,
    ) -> tuple[api.ParticipantSession, tuple[api.ParticipantInfo, ...]]:
        sid = f"S{next(self._sids)}"
        self._listeners[sid] = listener  # before the join: its events must find it
        args = {
            "room": room_id, "name": name, "autoSubscribe": auto_subscribe,
            "identity": identity, "grants": wire.encode(grants),
        }  # fmt: skip
        try:
            joined = await self.call("join", args, sid)
            session = RemoteSession(self, sid, _str(joined, "participantId"))
            others = _decode_all(joined.get("others"), api.ParticipantInfo)
        except BaseException:
            self._listeners.pop(sid, None)
            raise
        return session, others

    async def stats(self) -> Mapping[str, int]:
        counts = await self.call("stats", {})
        if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
            raise api.SfuError("the room service's stats were unreadable")
        return counts

    async def rooms(self) -> tuple[api.RoomSummary, ...]:
        return _decode_all(await self.call("rooms", {}), api.RoomSummary)

    async def room_participants(self, room_id: str) -> tuple[api.ParticipantDetails, ...]:
        found = await self.call("roomParticipants", {"room": room_id})
        return _decode_all(found, api.ParticipantDetails)

    async def remove_participant(self, room_id: str, participant_id: str) -> None:
        await self.call("removeParticipant", {"room": room_id, "participantId": participant_id})

    async def mute_track(self, room_id: str, track_id: str, muted: bool) -> api.TrackInfo:
        track = await self.call("muteTrack", {"room": room_id, "trackId": track_id, "muted": muted})
        return _decode(track, api.TrackInfo)

    async def close_room(self, room_id: str) -> None:
        await self.call("closeRoom", {"room": room_id})

    async def close(self, reason: str = "server-shutdown") -> None:
        await self.call("close", {"reason": reason})

    def forget(self, sid: str) -> None:
        self._listeners.pop(sid, None)


class RemoteSession:
    """One participant's :class:`~sfu.api.ParticipantSession` on a :class:`RemoteRoomService`."""

    def __init__(self, service: RemoteRoomService, sid: str, participant_id: str) -> None:
        self._service, self._sid, self._participant_id = service, sid, participant_id

    @property
    def participant_id(self) -> str:
        return self._participant_id

    async def _call(self, op: str, args: Mapping[str, Any]) -> Any:
        return await self._service.call(op, args, self._sid)

    async def offer(self, sdp: str, sources: Mapping[str, str]) -> api.Answer:
        answer = await self._call("offer", {"sdp": sdp, "sources": dict(sources)})
        return _decode(answer, api.Answer)

    async def answer(self, sdp: str) -> None:
        await self._call("answer", {"sdp": sdp})

    async def add_ice_candidate(
        self, candidate: str | None, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        args = {"candidate": candidate, "sdpMid": sdp_mid, "sdpMLineIndex": sdp_mline_index}
        await self._call("candidate", args)

    async def set_muted(self, track_id: str, muted: bool) -> None:
        await self._call("mute", {"trackId": track_id, "muted": muted})

    async def subscribe(self, track_ids: Sequence[str], subscribed: bool) -> None:
        await self._call("subscribe", {"trackIds": list(track_ids), "subscribed": subscribed})

    async def set_track_settings(
        self, track_ids: Sequence[str], settings: api.TrackSettings
    ) -> None:
        args = {"trackIds": list(track_ids), "settings": wire.encode(settings)}
        await self._call("trackSettings", args)

    async def leave(self, reason: str = "left") -> None:
        if self._service.closed:
            return  # its process is gone, and the session with it
        try:
            await self._call("leave", {"reason": reason})
        except api.InvalidState:
            pass  # left already (leave is idempotent)
        finally:
            self._service.forget(self._sid)


def _str(value: Any, key: str) -> str:
    found = value.get(key) if isinstance(value, dict) else None
    if not isinstance(found, str):
        raise api.SfuError(f"the room service's reply has no {key}")
    return found


def _decode(value: Any, cls: type[T]) -> T:
    try:
        return wire.decode(value, cls)
    except wire.WireError as exc:
        raise api.SfuError(f"the room service's reply was unreadable: {exc}") from None


def _decode_all(values: Any, cls: type[T]) -> tuple[T, ...]:
    if not isinstance(values, list):
        raise api.SfuError(f"the room service's reply has no list of {cls.__name__}")
    return tuple(_decode(v, cls) for v in values)
