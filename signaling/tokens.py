"""Access tokens: who may join which room, as whom, allowed to do what (docs/protocol.md §2).

A token is a JWT (RFC 7519) signed with HMAC-SHA256 (RFC 7518 §3.2) by one of the operator's
keys, named by the ``kid`` header (RFC 7515 §4.1.4) so keys can be rotated: a new key is
added, tokens are issued with it, and the old one is removed once its tokens have expired.
Claims::

    {"sub": identity, "name": display name, "room": room, "exp": ..., "nbf": ..., "iat": ...,
     "grants": {"publish": true, "subscribe": true, "sources": ["camera", "microphone"],
                "admin": false}}

``sub``, ``room`` and ``exp`` are required; a grant left out is the default of
:class:`sfu.api.Grants` (publish and subscribe any source; not admin). Pure: no I/O but
:func:`load_keys`.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import jwt

from sfu.api import FULL_GRANTS, Grants

ALGORITHM = "HS256"
#: RFC 7518 §3.2: a key of at least the hash's size (256 bits).
MIN_SECRET_LENGTH = 32
#: seconds of clock difference between the issuer and this server that are forgiven
LEEWAY = 10.0
MAX_TOKEN_LENGTH = 4096


class TokenError(Exception):
    """A token that does not let its bearer in; ``code`` is the error code clients get."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Access:
    """What a verified token allows."""

    room: str
    identity: str
    name: str | None
    grants: Grants
    expires: float


def load_keys(path: Path) -> dict[str, str]:
    """Keys from a file of ``KID: SECRET`` lines (``#`` comments, blank lines allowed).

    Raises ValueError naming the line of anything else, a repeated key id or a short secret.
    """
    keys: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kid, colon, secret = (part.strip() for part in line.partition(":"))
        if not colon or not kid or not secret:
            raise ValueError(f"{path}:{number}: expected 'KEY_ID: SECRET'")
        if kid in keys:
            raise ValueError(f"{path}:{number}: key id {kid!r} appears twice")
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"{path}:{number}: the secret of {kid!r} has {len(secret)} characters;"
                f" at least {MIN_SECRET_LENGTH} are needed"
            )
        keys[kid] = secret
    if not keys:
        raise ValueError(f"{path}: no keys")
    return keys


def new_secret() -> str:
    """A random secret for a keys file (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def create_token(
    keys: Mapping[str, str],
    kid: str,
    *,
    room: str,
    identity: str,
    name: str | None = None,
    grants: Grants = FULL_GRANTS,
    ttl: float = 6 * 3600,
    now: float | None = None,
) -> str:
    """A token for ``identity`` in ``room``, valid for ``ttl`` seconds, signed with key ``kid``."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": identity,
        "room": room,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl),
        "grants": grants_json(grants),
    }
    if name is not None:
        claims["name"] = name
    return jwt.encode(claims, keys[kid], algorithm=ALGORITHM, headers={"kid": kid})


def grants_json(grants: Grants) -> dict[str, Any]:
    result: dict[str, Any] = {
        "publish": grants.publish,
        "subscribe": grants.subscribe,
        "admin": grants.admin,
    }
    if grants.sources is not None:
        result["sources"] = list(grants.sources)
    return result


def verify(token: str, keys: Mapping[str, str], now: float | None = None) -> Access:
    """The access ``token`` gives; :class:`TokenError` with ``token-invalid`` (not a token of
    ours: malformed, unknown key, bad signature, missing or ill-typed claims) or
    ``token-expired`` (past ``exp``, or before ``nbf``)."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("token-invalid", f"the token is longer than {MAX_TOKEN_LENGTH} characters")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("token-invalid", "the token is not a JWT") from None
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        raise TokenError(
            "token-invalid", "the token is signed with a key this server does not have"
        )
    options: dict[str, Any] = {"require": ["exp", "sub", "room"]}
    if now is not None:  # PyJWT checks times against the wall clock; a given one is checked here
        options.update(verify_exp=False, verify_nbf=False, verify_iat=False)
    try:
        claims = jwt.decode(
            token,
            keys[kid],
            algorithms=[ALGORITHM],  # never what the token's own header says (RFC 8725 §3.1)
            leeway=LEEWAY,
            options=options,  # type: ignore[arg-type]  # PyJWT's Options is a TypedDict
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token-expired", "the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenError("token-expired", "the token is not valid yet (nbf)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError("token-invalid", f"the token has no {exc.claim!r} claim") from None
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
        raise TokenError("token-invalid", "the token's signature does not verify") from None
    except jwt.PyJWTError as exc:  # signed by us, but its claims are not what RFC 7519 says
        raise TokenError("token-invalid", f"the token is malformed: {exc}") from None
    if now is not None:
        _check_times(claims, now)
    elif not _finite(claims["exp"]):
        raise TokenError("token-invalid", "the token's exp/nbf are not numbers")
    return Access(
        room=_string(claims, "room"),
        identity=_string(claims, "sub"),
        name=_string(claims, "name") if "name" in claims else None,
        grants=_grants(claims.get("grants", {})),
        expires=float(claims["exp"]),
    )


def _check_times(claims: Mapping[str, Any], now: float) -> None:
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not _finite(exp) or (nbf is not None and not _finite(nbf)):
        raise TokenError("token-invalid", "the token's exp/nbf are not numbers")
    if now > exp + LEEWAY:
        raise TokenError("token-expired", "the token has expired")
    if nbf is not None and now < nbf - LEEWAY:
        raise TokenError("token-expired", "the token is not valid yet (nbf)")


def _finite(value: Any) -> TypeGuard[int | float]:
    # NaN passes every comparison; JSON numbers also read as inf (1e400) or ints past float's
    if not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _string(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise TokenError("token-invalid", f"the token's {name!r} claim is not a string")
    return value


def _grants(value: Any) -> Grants:
    if not isinstance(value, dict):
        raise TokenError("token-invalid", "the token's 'grants' claim is not an object")
    flags = {}
    for flag in ("publish", "subscribe", "admin"):
        if flag in value:
            if not isinstance(value[flag], bool):
                raise TokenError("token-invalid", f"grants.{flag} is not true or false")
            flags[flag] = value[flag]
    sources: Sequence[Any] | None = value.get("sources")
    if sources is not None and (
        not isinstance(sources, list) or not all(isinstance(s, str) for s in sources)
    ):
        raise TokenError("token-invalid", "grants.sources is not a list of strings")
    return Grants(**flags, sources=None if sources is None else tuple(sources))
