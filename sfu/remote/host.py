"""The room service behind a stream: the worker's half of the api boundary (issue 13).

:class:`ServiceHost` reads request frames from a :class:`~sfu.remote.proxy.RemoteRoomService`
at the stream's other end, calls the real :class:`~sfu.api.RoomService` and writes the reply.
Each session's events are written as they happen — so an event raised during a call is written
before that call's reply, and the proxy delivers it first: :data:`~sfu.api.EventListener`'s
glare rule holds across the boundary. Calls run concurrently, one task each (a session's calls
come one at a time from its proxy, as the api asks). When the stream ends, every session it
carried leaves ("disconnected"). The frames are docs/design/scale-out-plan.md §3.2's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import structlog

from sfu import api
from sfu.remote import wire
from sfu.remote.frames import FrameError, read_frame, write_frame

log = structlog.get_logger("sfu.remote")

Args = Mapping[str, Any]


class ServiceHost:
    """Serve ``service`` to the proxy at the other end of ``reader``/``writer``."""

    def __init__(
        self,
        service: api.RoomService,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        extra_ops: Mapping[str, Callable[[], Coroutine[Any, Any, Any]]] | None = None,
    ) -> None:
        self._service = service
        self._reader, self._writer = reader, writer
        self._sessions: dict[str, api.ParticipantSession] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self._ops: dict[str, Callable[[str | None, Args], Coroutine[Any, Any, Any]]] = {
            "join": self._join, "offer": self._offer, "answer": self._answer,
            "candidate": self._candidate, "mute": self._mute, "subscribe": self._subscribe,
            "trackSettings": self._track_settings, "leave": self._leave, "stats": self._stats,
            "rooms": self._rooms, "roomParticipants": self._room_participants,
            "removeParticipant": self._remove_participant, "muteTrack": self._mute_track,
            "closeRoom": self._close_room, "close": self._close,
        }  # fmt: skip
        # what the process serves beside the api (a worker's ``metrics``): no arguments
        for name, op in (extra_ops or {}).items():
            self._ops[name] = _without_arguments(op)

    async def run(self, idle_timeout: float | None = None) -> None:
        """Until the stream ends (or its framing breaks, or nothing arrives for
        ``idle_timeout`` seconds: a peer that pings went away); then every session leaves."""
        try:
            while (
                frame := await asyncio.wait_for(read_frame(self._reader), idle_timeout)
            ) is not None:
                task = asyncio.ensure_future(self._handle(frame))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
        except (FrameError, ConnectionError, TimeoutError) as exc:
            log.warning("room service stream broken", error=str(exc) or "silent")
        finally:
            for task in list(self._calls):
                task.cancel()
            sessions, self._sessions = list(self._sessions.values()), {}
            for session in sessions:
                with contextlib.suppress(Exception):
                    await session.leave("disconnected")
            self._writer.close()

    def _write(self, frame: Mapping[str, Any]) -> None:
        if self._writer.is_closing():
            return
        try:
            write_frame(self._writer, frame)
        except FrameError as exc:  # over the limit: the reply says so instead
            log.error("room service frame refused", error=str(exc))
            if "id" in frame:
                error = api.SfuError(f"the reply could not be sent: {exc}")
                write_frame(self._writer, {"id": frame["id"], "err": wire.encode_error(error)})

    def _listener(self, sid: str) -> api.EventListener:
        def deliver(event: api.Event) -> None:
            if isinstance(event, api.SessionClosed):
                self._sessions.pop(sid, None)
            self._write({"sid": sid, "event": wire.encode(event)})

        return deliver

    async def _handle(self, frame: Mapping[str, Any]) -> None:
        call_id = frame.get("id")
        try:
            op = self._ops.get(frame.get("op"))  # type: ignore[arg-type]
            args = frame.get("args", {})
            sid = frame.get("sid")
            if op is None or not isinstance(args, Mapping) or not isinstance(sid, str | None):
                raise wire.WireError(f"not a request: op {frame.get('op')!r}")
            result = await op(sid, args)
        except api.SfuError as exc:
            self._write({"id": call_id, "err": wire.encode_error(exc)})
        except (wire.WireError, KeyError, TypeError, ValueError) as exc:
            message = f"the room service could not read a request: {exc}"
            self._write({"id": call_id, "err": wire.encode_error(api.SfuError(message))})
        except Exception:
            log.exception("room service call failed", op=frame.get("op"))
            error = api.SfuError("the room service failed")
            self._write({"id": call_id, "err": wire.encode_error(error)})
        else:
            self._write({"id": call_id, "ok": result})

    def _session(self, sid: str | None) -> api.ParticipantSession:
        session = None if sid is None else self._sessions.get(sid)
        if session is None:
            raise api.InvalidState(f"no session {sid!r} on this room service")
        return session

    # --- the ops: (sid, args) -> a JSON value ---

    async def _join(self, sid: str | None, args: Args) -> Any:
        if sid is None or sid in self._sessions:
            raise wire.WireError(f"a join needs a new session id, not {sid!r}")
        session, others = await self._service.join(
            _str(args, "room"),
            _str(args, "name"),
            self._listener(sid),
            _bool(args, "autoSubscribe"),
            identity=_optional_str(args, "identity"),
            grants=wire.decode(args.get("grants"), api.Grants),
        )
        self._sessions[sid] = session
        return {"participantId": session.participant_id, "others": [wire.encode(o) for o in others]}

    async def _offer(self, sid: str | None, args: Args) -> Any:
        sources = args.get("sources")
        if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
            raise wire.WireError("sources: an object of strings")
        answer = await self._session(sid).offer(_str(args, "sdp"), sources)
        return wire.encode(answer)

    async def _answer(self, sid: str | None, args: Args) -> Any:
        await self._session(sid).answer(_str(args, "sdp"))

    async def _candidate(self, sid: str | None, args: Args) -> Any:
        index = args.get("sdpMLineIndex")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise wire.WireError("sdpMLineIndex: an integer or null")
        await self._session(sid).add_ice_candidate(
            _optional_str(args, "candidate"), _optional_str(args, "sdpMid"), index
        )

    async def _mute(self, sid: str | None, args: Args) -> Any:
        await self._session(sid).set_muted(_str(args, "trackId"), _bool(args, "muted"))

    async def _subscribe(self, sid: str | None, args: Args) -> Any:
        await self._session(sid).subscribe(_strs(args, "trackIds"), _bool(args, "subscribed"))

    async def _track_settings(self, sid: str | None, args: Args) -> Any:
        settings = wire.decode(args.get("settings"), api.TrackSettings)
        await self._session(sid).set_track_settings(_strs(args, "trackIds"), settings)

    async def _leave(self, sid: str | None, args: Args) -> Any:
        session = self._session(sid)
        await session.leave(_str(args, "reason"))
        self._sessions.pop(sid or "", None)

    async def _stats(self, sid: str | None, args: Args) -> Any:
        return dict(await self._service.stats())

    async def _rooms(self, sid: str | None, args: Args) -> Any:
        return [wire.encode(r) for r in await self._service.rooms()]

    async def _room_participants(self, sid: str | None, args: Args) -> Any:
        return [wire.encode(p) for p in await self._service.room_participants(_str(args, "room"))]

    async def _remove_participant(self, sid: str | None, args: Args) -> Any:
        await self._service.remove_participant(_str(args, "room"), _str(args, "participantId"))

    async def _mute_track(self, sid: str | None, args: Args) -> Any:
        track = await self._service.mute_track(
            _str(args, "room"), _str(args, "trackId"), _bool(args, "muted")
        )
        return wire.encode(track)

    async def _close_room(self, sid: str | None, args: Args) -> Any:
        await self._service.close_room(_str(args, "room"))

    async def _close(self, sid: str | None, args: Args) -> Any:
        await self._service.close(_str(args, "reason"))


def _without_arguments(
    op: Callable[[], Coroutine[Any, Any, Any]],
) -> Callable[[str | None, Args], Coroutine[Any, Any, Any]]:
    async def call(sid: str | None, args: Args) -> Any:
        return await op()

    return call


def _str(args: Args, key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise wire.WireError(f"{key}: a string")
    return value


def _optional_str(args: Args, key: str) -> str | None:
    value = args.get(key)
    if value is not None and not isinstance(value, str):
        raise wire.WireError(f"{key}: a string or null")
    return value


def _bool(args: Args, key: str) -> bool:
    value = args.get(key)
    if not isinstance(value, bool):
        raise wire.WireError(f"{key}: true or false")
    return value


def _strs(args: Args, key: str) -> list[str]:
    value = args.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise wire.WireError(f"{key}: an array of strings")
    return value
