"""Access tokens (signaling/tokens.py): what verifies, what does not and with which code."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from sfu.api import Grants
from signaling.tokens import (
    LEEWAY,
    TokenError,
    create_token,
    load_keys,
    new_secret,
    verify,
)

NOW = 1_800_000_000.0
KEYS = {"k1": "a" * 32, "k2": "b" * 40}


def signed(claims: dict[str, Any], kid: str = "k1", key: str | None = None, **header: Any) -> str:
    return jwt.encode(claims, key or KEYS[kid], algorithm="HS256", headers={"kid": kid, **header})


def unsigned(claims: dict[str, Any]) -> str:
    """A token with ``alg: none`` (RFC 7519 §6): must never be accepted."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'kid': 'k1'})}.{part(claims)}."


BASE = {"sub": "ann", "room": "standup", "exp": NOW + 60, "nbf": NOW - 1, "iat": NOW - 1}


def test_a_created_token_verifies_with_its_grants() -> None:
    grants = Grants(publish=True, subscribe=False, sources=("camera",), admin=True)
    token = create_token(KEYS, "k2", room="r", identity="ann", name="Ann", grants=grants, now=NOW)
    access = verify(token, KEYS, now=NOW + 10)
    assert (access.room, access.identity, access.name, access.grants) == ("r", "ann", "Ann", grants)
    assert access.expires == NOW + 6 * 3600


def test_grants_left_out_are_the_defaults() -> None:
    access = verify(signed(BASE), KEYS, now=NOW)
    assert access.grants == Grants() and access.name is None


@pytest.mark.parametrize(
    ("token", "code", "says"),
    [
        (signed({**BASE, "exp": NOW - LEEWAY - 1}), "token-expired", "expired"),
        (signed({**BASE, "nbf": NOW + LEEWAY + 5}), "token-expired", "not valid yet"),
        (signed(BASE, key="c" * 32), "token-invalid", "signature"),
        (signed(BASE, kid="k3", key="c" * 32), "token-invalid", "key this server does not have"),
        (jwt.encode(BASE, KEYS["k1"], algorithm="HS256"), "token-invalid", "key"),  # no kid
        (unsigned(BASE), "token-invalid", "signature"),
        (signed({k: v for k, v in BASE.items() if k != "exp"}), "token-invalid", "'exp'"),
        (signed({k: v for k, v in BASE.items() if k != "sub"}), "token-invalid", "'sub'"),
        (signed({k: v for k, v in BASE.items() if k != "room"}), "token-invalid", "'room'"),
        (signed({**BASE, "room": 5}), "token-invalid", "'room'"),
        (signed({**BASE, "grants": []}), "token-invalid", "'grants'"),
        (signed({**BASE, "grants": {"publish": "yes"}}), "token-invalid", "grants.publish"),
        (signed({**BASE, "grants": {"sources": "camera"}}), "token-invalid", "grants.sources"),
        ("not a token", "token-invalid", "not a JWT"),
        ("", "token-invalid", "not a JWT"),
        ("x" * 5000, "token-invalid", "longer than"),
    ],
)
def test_bad_tokens_are_refused_with_a_code(token: str, code: str, says: str) -> None:
    with pytest.raises(TokenError) as refused:
        verify(token, KEYS, now=NOW)
    assert refused.value.code == code and says in refused.value.message


def test_a_small_clock_difference_is_forgiven() -> None:
    assert verify(signed({**BASE, "exp": NOW - LEEWAY + 1}), KEYS, now=NOW).identity == "ann"
    assert verify(signed({**BASE, "nbf": NOW + LEEWAY - 1}), KEYS, now=NOW).identity == "ann"


def test_the_wall_clock_is_used_when_no_time_is_given() -> None:
    token = create_token(KEYS, "k1", room="r", identity="ann", ttl=60)
    assert verify(token, KEYS).identity == "ann"
    old = create_token(KEYS, "k1", room="r", identity="ann", ttl=1, now=time.time() - 3600)
    with pytest.raises(TokenError, match="expired"):
        verify(old, KEYS)


def test_a_removed_key_no_longer_admits() -> None:
    token = create_token(KEYS, "k1", room="r", identity="ann", now=NOW)
    with pytest.raises(TokenError, match="does not have"):
        verify(token, {"k2": KEYS["k2"]}, now=NOW)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("k1: " + "s" * 31, "at least 32"),
        ("k1 " + "s" * 40, "expected 'KEY_ID: SECRET'"),
        (f"k1: {'s' * 32}\nk1: {'t' * 32}", "appears twice"),
        ("# only a comment\n\n", "no keys"),
    ],
)
def test_bad_key_files_say_what_is_wrong(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        load_keys(path)


def test_key_files_keep_their_order_and_ignore_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    first, second = new_secret(), new_secret()
    path.write_text(f"# keys\nnew: {first}\n\n old : {second}\n")
    assert list(load_keys(path).items()) == [("new", first), ("old", second)]
    assert len(first) >= 32 and first != second
