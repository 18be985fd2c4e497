"""The api's values and errors as JSON: what crosses a worker's stream or a node link.

Every value of :mod:`sfu.api` is a frozen dataclass. On the wire it is a JSON object whose
``"t"`` names its class and whose other members are its fields, named as in Python; tuples are
arrays, mappings objects. Decoding checks the object against the class's annotations (pydantic,
already the signaling's validator) and raises :class:`WireError` saying what is wrong: a frame
from another node is input from another machine. An unknown member is an error too (a peer of
another version should fail loudly, not lose a field).

An :class:`~sfu.api.SfuError` travels as ``{"code", "message"}`` and comes back as the same
class, so a proxy raises what the room service raised; a code this side does not know comes back
as an ``SfuError`` with that code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar, get_args

from pydantic import TypeAdapter, ValidationError

from sfu import api

T = TypeVar("T")

#: Every value that crosses the boundary (:mod:`sfu.api`), by the name it carries as ``"t"``.
VALUES: tuple[type[Any], ...] = (
    api.TrackInfo, api.ParticipantInfo, api.RoomSummary, api.ParticipantDetails,
    api.PublishedTrack, api.OfferedTrack, api.Answer, api.LayerActivity, api.Grants,
    api.TrackSettings, *get_args(api.Event),
)  # fmt: skip
EVENTS: tuple[type[Any], ...] = get_args(api.Event)
_BY_NAME = {cls.__name__: cls for cls in VALUES}
ERRORS: tuple[type[api.SfuError], ...] = (
    api.SfuError, api.InvalidSdp, api.InvalidState, api.UnknownTrack, api.RoomFull,
    api.TooManyRooms, api.UnknownRoom, api.UnknownParticipant, api.NotAllowed,
    api.ServerDraining,
)  # fmt: skip
_ERROR_BY_CODE = {cls.code: cls for cls in ERRORS}


class WireError(ValueError):
    """What arrived is not a value (or error) of the api; the message says why."""


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    """pydantic's validator and serializer of ``cls``, built when first needed (~ms each)."""
    adapter = _ADAPTERS.get(cls.__name__)
    if adapter is None:
        adapter = _ADAPTERS[cls.__name__] = TypeAdapter(cls)
    return adapter


def encode(value: object) -> dict[str, Any]:
    """``value`` (one of :data:`VALUES`) as a JSON-ready object."""
    cls = type(value)
    if _BY_NAME.get(cls.__name__) is not cls:
        raise TypeError(f"{cls.__name__} is not a value of sfu.api")
    body: dict[str, Any] = _adapter(cls).dump_python(
        value, mode="json", fallback=_plain, warnings=False
    )
    return {"t": cls.__name__, **body}


def _plain(value: object) -> object:
    """A mapping field's value of another class than dict (a ChainMap, a read-only view)."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} cannot be encoded")


def decode(data: object, expected: type[T] | tuple[type[Any], ...]) -> T:
    """The value ``data`` encodes, which must be an ``expected`` (a class, or a tuple of them:
    :data:`EVENTS`); :class:`WireError` otherwise."""
    if not isinstance(data, dict):
        raise WireError(f"expected an object, got {type(data).__name__}")
    tag = data.get("t")
    found = _BY_NAME.get(tag) if isinstance(tag, str) else None
    if found is None:
        raise WireError(f"unknown value type {tag!r}")
    cls: type[Any] = found
    if not issubclass(found, expected):
        names = expected.__name__ if isinstance(expected, type) else "an event"
        raise WireError(f"expected {names}, got {tag}")
    fields = {k: v for k, v in data.items() if k != "t"}
    unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise WireError(f"{tag}: unknown member(s) {', '.join(sorted(unknown))}")
    try:
        value: T = _adapter(cls).validate_python(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(value)'}: {e['msg']}" for e in exc.errors()[:3]
        )
        raise WireError(f"{tag}: {problems}") from None
    return value


def encode_error(error: api.SfuError) -> dict[str, str]:
    return {"code": error.code, "message": error.message}


def decode_error(data: object) -> api.SfuError:
    """The :class:`~sfu.api.SfuError` ``data`` encodes; :class:`WireError` if it is not one."""
    if not isinstance(data, dict) or set(data) != {"code", "message"}:
        raise WireError("an error is an object of exactly code and message")
    code, message = data["code"], data["message"]
    if not isinstance(code, str) or not isinstance(message, str):
        raise WireError("an error's code and message are strings")
    cls = _ERROR_BY_CODE.get(code)
    if cls is not None:
        return cls(message)
    error = api.SfuError(message)
    error.code = code  # a code of a newer peer: kept, for the client to see
    return error
