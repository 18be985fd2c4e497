"""``sfu token`` and ``sfu serve``'s refusal to serve beyond loopback without keys (click's
runner: nothing is bound)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sfu.api import Grants
from signaling.cli import main
from signaling.tokens import load_keys, verify


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    for kid in ("main", "next"):
        result = CliRunner().invoke(main, ["token", "keygen", kid])
        assert result.exit_code == 0, result.output
        with path.open("a") as keys:
            keys.write(result.output)
    return path


def test_a_created_token_admits_to_its_room_with_its_grants(keys_file: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["token", "create", "--keys-file", str(keys_file), "--key-id", "next", "--room", "r",
         "--identity", "ann", "--name", "Ann", "--no-publish", "--source", "screen", "--ttl", "60"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    access = verify(result.output.strip(), load_keys(keys_file))
    assert (access.room, access.identity, access.name) == ("r", "ann", "Ann")
    assert access.grants == Grants(publish=False, sources=("screen",))


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["--key-id", "gone"], "has no key 'gone'"),
        (["--keys-file", "/nonexistent/keys"], "does not exist"),
    ],
)
def test_token_create_says_what_is_wrong(keys_file: Path, arguments: list[str], error: str) -> None:
    base = ["token", "create", "--keys-file", str(keys_file), "--room", "r", "--identity", "a"]
    result = CliRunner().invoke(main, base + arguments)
    assert result.exit_code == 2 and error in result.output


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "sfu.example"])
def test_serving_beyond_loopback_without_keys_is_refused(host: str) -> None:
    result = CliRunner().invoke(main, ["serve", "--host", host, "--port", "0"])
    assert result.exit_code == 2
    assert "without --keys-file anyone who" in result.output and "--insecure" in result.output


def test_a_bad_keys_file_stops_the_server_before_it_starts(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("main: short\n")
    result = CliRunner().invoke(main, ["serve", "--keys-file", str(path), "--port", "0"])
    assert result.exit_code == 2 and "at least 32" in result.output
