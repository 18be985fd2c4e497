"""Access tokens (signaling/tokens.py verify): any string, and any header and claims signed
with the server's key, give an Access or a TokenError (RFC 7519; HS256, RFC 7518 §3.2)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from signaling.tokens import Access, TokenError, verify
from tests.fuzz.harnesses.jsonish import obj
from tests.fuzz.reader import Reader

KEYS = {"k1": "a-secret-of-the-server-at-least-32-bytes"}
CODES = {"token-invalid", "token-expired"}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed(header: bytes, payload: bytes, key: str = KEYS["k1"]) -> str:
    signing_input = _b64(header) + "." + _b64(payload)
    mac = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(mac)


def check_token(token: str, now: float | None) -> None:
    try:
        access = verify(token, KEYS, now=now)
    except TokenError as exc:
        assert exc.code in CODES and exc.message, (exc.code, exc.message)
        return
    assert isinstance(access, Access)
    assert isinstance(access.room, str) and access.room and len(access.room) <= 256
    assert isinstance(access.identity, str) and access.identity
    assert isinstance(access.expires, float) and access.expires == access.expires, access.expires
    assert now is None or now <= access.expires + 10, "an expired token verified"


def run(data: bytes) -> None:
    reader = Reader(data)
    mode = reader.uint()
    now = None if mode & 1 else 1_700_000_000.0
    if mode < 64:
        check_token(reader.rest().decode("utf-8", errors="replace"), now)
        return
    header = {"alg": "HS256", "kid": "k1"} if mode & 2 else obj(reader)
    claims = obj(reader)
    if mode & 4:
        claims.update(sub="alice", room="r1", exp=1_700_000_100)
    if mode & 8:
        claims.update(exp=reader.text(8) if mode & 16 else float("nan"))
    raw = json.dumps(claims).encode()
    if mode & 32:
        raw = raw[: reader.below(len(raw) + 1)] + reader.rest()
    check_token(signed(json.dumps(header).encode(), raw), now)


def seeds() -> list[bytes]:
    return [bytes([m]) + b"\x01\x00\x02\x03\x04\x05" * 4 for m in (0, 65, 70, 71, 78, 79, 111)]
