"""The process's file descriptor limit: every HTTP connection and every media socket holds one.

Past the limit, new connections fail: uvloop (libuv) accepts and at once closes them, so clients
see a reset and the server logs nothing. :func:`raise_file_limit` takes all the kernel allows
without privileges; :func:`watch_file_descriptors` says when the limit comes close.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
from dataclasses import dataclass

from sfu.log import get_logger

#: Warn when this share of the soft limit is in use, and say so again once below the lower one.
WARN_SHARE = 0.9
CLEAR_SHARE = 0.8
#: Seconds between two counts (a directory listing of /proc/self/fd: ~0.5 ms per 1,000 open).
WATCH_INTERVAL = 2.0

log = get_logger()


@dataclass(frozen=True, slots=True)
class FileLimit:
    soft: int  # what the process may open now
    hard: int  # the ceiling the soft limit may be raised to without privileges
    started_with: int  # the soft limit the process was started with


def raise_file_limit() -> FileLimit:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one (getrlimit(2)).

    The soft limit is often 1,024 (a default meant for select(2), which this server does not
    use); the hard limit is what the operator allows (systemd ``LimitNOFILE``, ``ulimit -Hn``).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return FileLimit(soft, hard, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        # macOS refuses an unlimited hard limit as the soft one (its ceiling is OPEN_MAX)
        log.warning(
            "could not raise the file descriptor limit", soft=soft, hard=hard, error=str(exc)
        )
        return FileLimit(soft, hard, soft)
    return FileLimit(hard, hard, soft)


def open_file_descriptors(limit: int) -> int | None:
    """How many descriptors the process has open, or None where /proc is not available."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError as exc:
        # listing takes a descriptor too
        return limit if exc.errno in (errno.EMFILE, errno.ENFILE) else None


async def watch_file_descriptors(limit: int, interval: float = WATCH_INTERVAL) -> None:
    """Log a warning when open descriptors near ``limit``, and when they are back below."""
    near = False
    while True:
        await asyncio.sleep(interval)
        used = open_file_descriptors(limit)
        if used is None:
            return
        if not near and used >= limit * WARN_SHARE:
            near = True
            log.warning(
                "file descriptors nearly exhausted: new connections will be refused",
                open=used,
                limit=limit,
                fix="raise the hard limit (systemd LimitNOFILE, ulimit -Hn); docs/operations.md",
            )
        elif near and used < limit * CLEAR_SHARE:
            near = False
            log.info("file descriptors below the limit again", open=used, limit=limit)
