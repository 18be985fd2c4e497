"""TURN REST credentials and URLs (signaling/turn.py). The expected passwords were computed
independently of the module: ``printf %s USERNAME | openssl dgst -sha1 -hmac SECRET -binary |
base64``."""

from __future__ import annotations

from pathlib import Path

import pytest

from signaling.turn import TurnConfig, check_url, credentials, ice_servers, read_secret


@pytest.mark.parametrize(
    ("secret", "username", "password"),
    [
        ("testbed-secret", "1700000000:alice", "SGvJtZmxiHkJ3KJpgPKtguSaA+Q="),
        ("north-south-key", "1700000000:alice", "EUa1QSnfAlOrURZIrdPaYFergLQ="),
        ("testbed-secret", "1764547200:p_3f9a", "9oUxKyMDHh01/Sebzwhs2LMBBZc="),
        ("north-south-key", "1764547200:p_3f9a", "FYsMofjDQkADL8r33UBp9euuPz8="),
        ("testbed-secret", "0:x", "iaethDitea9UFHKxyE6NSgZNDvI="),
    ],
)
def test_credentials_match_known_vectors(secret: str, username: str, password: str) -> None:
    expires, _, user = username.partition(":")
    assert credentials(secret, user, int(expires)) == (username, password)


def test_ice_servers_expire_after_the_ttl_and_name_the_user() -> None:
    config = TurnConfig(("turn:t.example:3478?transport=udp", "turns:t.example:5349"), "s" * 8, 600)
    [server] = ice_servers(config, "PA_1", now=1000.9)
    assert server["urls"] == ["turn:t.example:3478?transport=udp", "turns:t.example:5349"]
    assert server["username"] == "1600:PA_1"
    assert server["credential"] == credentials("s" * 8, "PA_1", 1600)[1]
    assert ice_servers(None, "PA_1", now=1000.0) == []


@pytest.mark.parametrize(
    "url",
    [
        "turn:127.0.0.1",
        "turn:127.0.0.1:3478",
        "turn:turn.example.com:3478?transport=udp",
        "turn:turn.example.com?transport=tcp",
        "turns:turn.example.com:5349",
        "turns:turn.example.com:443?transport=tcp",
        "turn:[2001:db8::1]:3478",
    ],
)
def test_turn_urls_are_accepted(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("stun:127.0.0.1:3478", "is not a TURN URL"),
        ("http://turn.example.com", "is not a TURN URL"),
        ("turn://turn.example.com:3478", "is not a TURN URL"),
        ("turn:", "is not a TURN URL"),
        ("turn:host:3478?transport=sctp", "is not a TURN URL"),
        ("turn:host:3478 turn:other", "is not a TURN URL"),
        ("turn:user@host", "is not a TURN URL"),
        ("turn:host:0", "port 0 is not in 1-65535"),
        ("turn:host:70000", "port 70000 is not in 1-65535"),
        ("turns:host:5349?transport=udp", "runs over tcp"),
    ],
)
def test_other_urls_are_refused_with_what_is_expected(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        check_url(url)
    assert "turn:HOST[:PORT]" in str(caught.value) or "port" in why or "tcp" in why


def test_a_config_never_shows_its_secret() -> None:
    config = TurnConfig(("turn:127.0.0.1:3478",), "do-not-print-me")
    assert "do-not-print-me" not in repr(config) and "do-not-print-me" not in str(config)


@pytest.mark.parametrize(
    ("urls", "secret", "ttl", "why"),
    [
        ((), "s", 60, "no TURN URLs"),
        (("turn:h",), "", 60, "secret is empty"),
        (("turn:h",), "s", 0, "must be positive"),
        (("turn:h", "http://h"), "s", 60, "is not a TURN URL"),
    ],
)
def test_bad_configs_are_refused(urls: tuple[str, ...], secret: str, ttl: int, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        TurnConfig(urls, secret, ttl)


def test_the_secret_is_the_first_line_of_its_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("  s3cret-value \nignored\n")
    assert read_secret(path) == "s3cret-value"
    path.write_text("\n")
    with pytest.raises(ValueError, match="holds no TURN secret"):
        read_secret(path)
