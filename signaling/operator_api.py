"""The operator API (docs/operations.md, "Operator API"): rooms and participants over HTTP.

Every request carries ``Authorization: Bearer <token>`` (RFC 6750): an access token with the
``admin`` grant, for the room it names or for every room (``"room": "*"``). A server without
keys (development on loopback) asks for none, as it asks joins for none. Replies are JSON;
errors are ``{"code": ..., "message": ...}`` with the HTTP status that fits.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from sfu.api import (
    ParticipantDetails,
    RoomService,
    SfuError,
    TrackInfo,
    UnknownParticipant,
    UnknownRoom,
    UnknownTrack,
)
from sfu.log import get_logger
from signaling.messages import track_json
from signaling.tokens import TokenError, verify

#: the room of a token that lets its bearer manage every room
ALL_ROOMS = "*"

log = get_logger()
T = TypeVar("T")


def add_routes(app: web.Application, service: RoomService, keys: Mapping[str, str] | None) -> None:
    api = _OperatorApi(service, keys)
    app.router.add_get("/api/rooms", api.list_rooms)
    app.router.add_get("/api/rooms/{room}", api.show_room)
    app.router.add_delete("/api/rooms/{room}", api.close_room)
    app.router.add_delete("/api/rooms/{room}/participants/{participant}", api.remove)
    app.router.add_post("/api/rooms/{room}/tracks/{track}/mute", api.mute)


def _error(status: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    return status(
        text=json.dumps({"code": code, "message": message}),
        content_type="application/json",
        headers={"WWW-Authenticate": "Bearer"} if status is web.HTTPUnauthorized else None,
    )


_NOT_FOUND: dict[type[SfuError], type[web.HTTPException]] = {
    UnknownRoom: web.HTTPNotFound,
    UnknownParticipant: web.HTTPNotFound,
    UnknownTrack: web.HTTPNotFound,
}


class _OperatorApi:
    def __init__(self, service: RoomService, keys: Mapping[str, str] | None) -> None:
        self._service = service
        self._keys = keys

    def _authorize(self, request: web.Request, room: str | None) -> None:
        """HTTPUnauthorized without a valid admin token, HTTPForbidden for another room's."""
        if self._keys is None:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _error(
                web.HTTPUnauthorized, "token-required", "send Authorization: Bearer <admin token>"
            )
        try:
            access = verify(token.strip(), self._keys)
        except TokenError as exc:
            raise _error(web.HTTPUnauthorized, exc.code, exc.message) from None
        if not access.grants.admin:
            raise _error(web.HTTPForbidden, "not-allowed", "the token has no admin grant")
        if access.room != ALL_ROOMS and access.room != room:
            where = "every room" if room is None else f"room {room!r}"
            raise _error(web.HTTPForbidden, "not-allowed", f"the token does not admit to {where}")
        log.info(
            "operator request",
            method=request.method,
            path=request.path,
            identity=access.identity,
        )

    @staticmethod
    async def _run(action: Callable[[], Awaitable[T]]) -> T:
        try:
            return await action()
        except SfuError as exc:
            status = _NOT_FOUND.get(type(exc), web.HTTPBadRequest)
            raise _error(status, exc.code, exc.message) from None

    async def list_rooms(self, request: web.Request) -> web.Response:
        self._authorize(request, None)
        rooms = [
            {"room": r.room_id, "participants": r.participants, "tracks": r.tracks}
            for r in await self._service.rooms()
        ]
        return web.json_response({"rooms": rooms})

    async def show_room(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        self._authorize(request, room)

        async def details() -> tuple[ParticipantDetails, ...]:
            return await self._service.room_participants(room)

        participants = await self._run(details)
        return web.json_response(
            {"room": room, "participants": [_participant_json(p) for p in participants]}
        )

    async def close_room(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        self._authorize(request, room)
        await self._run(lambda: self._service.close_room(room))
        return web.json_response({"room": room, "closed": True})

    async def remove(self, request: web.Request) -> web.Response:
        room, participant = request.match_info["room"], request.match_info["participant"]
        self._authorize(request, room)
        await self._run(lambda: self._service.remove_participant(room, participant))
        return web.json_response({"room": room, "participantId": participant, "removed": True})

    async def mute(self, request: web.Request) -> web.Response:
        room, track = request.match_info["room"], request.match_info["track"]
        self._authorize(request, room)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("muted"), bool):
            raise _error(web.HTTPBadRequest, "invalid-message", 'send {"muted": true|false}')
        muted: bool = body["muted"]
        info: TrackInfo = await self._run(lambda: self._service.mute_track(room, track, muted))
        return web.json_response(track_json(info))


def _participant_json(participant: ParticipantDetails) -> dict[str, Any]:
    return {
        "participantId": participant.participant_id,
        "name": participant.name,
        "identity": participant.identity,
        "connected": participant.connected,
        "tracks": [track_json(t) for t in participant.tracks],
    }
