"""TURN servers for clients, with time-limited credentials (docs/operations.md, "TURN").

The operator's TURN servers (coturn with ``use-auth-secret``) share a secret with this server.
Each participant gets credentials of the "TURN REST API" (draft-uberti-behave-turn-rest-00 §2,
never an RFC; what coturn implements): the username is ``"<expiry unix time>:<user>"`` and the
password is ``base64(HMAC-SHA1(secret, username))``. The TURN server recomputes the password from
the username and refuses it after the expiry, so nothing is stored anywhere and a leaked
credential is good only until then. Pure: no I/O but :func:`read_secret`.

URLs are those of RFC 7065 §3: ``turn:HOST[:PORT][?transport=udp|tcp]`` and
``turns:HOST[:PORT][?transport=tcp]`` (``turns`` over DTLS is not offered by browsers).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Seconds the credentials handed out at a join are good for (a resume hands out new ones).
DEFAULT_TTL = 6 * 3600
#: coturn's default ``rest-api-separator``
SEPARATOR = ":"

_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"
_TURN_URL = re.compile(
    rf"(?P<scheme>turns?):(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?"
)
_EXPECTED = (
    "expected turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT][?transport=tcp] "
    "(RFC 7065), e.g. turn:turn.example.com:3478?transport=udp"
)


@dataclass(frozen=True, slots=True)
class TurnConfig:
    """The TURN servers clients are told about and the secret they share with this server."""

    urls: tuple[str, ...]
    secret: str
    ttl: int = DEFAULT_TTL

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("no TURN URLs")
        for url in self.urls:
            check_url(url)
        if not self.secret:
            raise ValueError("the TURN secret is empty")
        if self.ttl <= 0:
            raise ValueError(f"the credentials' lifetime must be positive, not {self.ttl}")

    def __repr__(self) -> str:  # never the secret, wherever a config is printed
        return f"TurnConfig(urls={self.urls!r}, ttl={self.ttl})"


def check_url(url: str) -> str:
    """``url`` if it is a TURN URL a client can use, else ValueError saying what is expected."""
    match = _TURN_URL.fullmatch(url)
    if match is None:
        shown = url if len(url) <= 200 else url[:200] + "..."
        raise ValueError(f"{shown!r} is not a TURN URL: {_EXPECTED}")
    port = match["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"{url!r}: port {port} is not in 1-65535")
    if match["scheme"] == "turns" and match["transport"] == "udp":
        raise ValueError(f"{url!r}: turns (TURN over TLS) runs over tcp, not udp")
    return url


def read_secret(path: Path) -> str:
    """The secret in a file (its first line, surrounding white space removed)."""
    lines = path.read_text().splitlines()
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ValueError(f"{path}: the first line holds no TURN secret")
    return secret


def credentials(secret: str, user: str, expires: int) -> tuple[str, str]:
    """(username, password) for ``user`` until the unix time ``expires``."""
    username = f"{expires}{SEPARATOR}{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers(config: TurnConfig | None, user: str, now: float) -> list[dict[str, Any]]:
    """The ``iceServers`` of ``joined``/``resumed``: one entry with every URL, as the WebRTC
    ``RTCIceServer`` dictionary has it; [] without TURN servers."""
    if config is None:
        return []
    username, credential = credentials(config.secret, user, int(now) + config.ttl)
    return [{"urls": list(config.urls), "username": username, "credential": credential}]
