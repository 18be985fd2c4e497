"""``sfu token``: issue access tokens and make keys (signaling/tokens.py, docs/operations.md)."""

from __future__ import annotations

from pathlib import Path

import click

from sfu.api import Grants
from signaling.tokens import create_token, load_keys, new_secret

KEYS_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def read_keys(path: Path) -> dict[str, str]:
    """The keys of ``path``, or a usage error that says what is wrong with the file."""
    try:
        return load_keys(path)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--keys-file") from None


@click.group()
def token() -> None:
    """Access tokens: a signed pass for one identity to one room."""


@token.command()
@click.option(
    "--keys-file",
    type=KEYS_FILE,
    required=True,
    envvar="SFU_KEYS_FILE",
    show_envvar=True,
    help="The server's keys file ('KEY_ID: SECRET' lines).",
)
@click.option("--key-id", help="Which key signs it. Default: the file's first.")
@click.option("--room", required=True, help="The room it admits to.")
@click.option(
    "--identity",
    required=True,
    help="Who it is for; a second session with the same identity replaces the first.",
)
@click.option("--name", help="Display name (instead of the one the client's join gives).")
@click.option(
    "--ttl",
    type=click.FloatRange(min=1),
    default=6 * 3600.0,
    show_default=True,
    help="Seconds it stays valid (for joining; a joined session is not cut at expiry).",
)
@click.option("--publish/--no-publish", default=True, show_default=True)
@click.option("--subscribe/--no-subscribe", default=True, show_default=True)
@click.option(
    "--source",
    "sources",
    multiple=True,
    help="A source it may publish (camera, microphone, screen, ...; repeatable). Default: any.",
)
@click.option("--admin", is_flag=True, help="May manage the room through the operator API.")
def create(
    keys_file: Path,
    key_id: str | None,
    room: str,
    identity: str,
    name: str | None,
    ttl: float,
    publish: bool,
    subscribe: bool,
    sources: tuple[str, ...],
    admin: bool,
) -> None:
    """Print a token for IDENTITY in ROOM."""
    keys = read_keys(keys_file)
    kid = key_id if key_id is not None else next(iter(keys))
    if kid not in keys:
        raise click.BadParameter(f"{keys_file} has no key {kid!r}", param_hint="--key-id")
    grants = Grants(publish=publish, subscribe=subscribe, sources=sources or None, admin=admin)
    click.echo(
        create_token(keys, kid, room=room, identity=identity, name=name, grants=grants, ttl=ttl)
    )


@token.command()
@click.argument("key_id")
def keygen(key_id: str) -> None:
    """Print a new 'KEY_ID: SECRET' line for a keys file."""
    click.echo(f"{key_id}: {new_secret()}")
