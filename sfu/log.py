"""Structured logging: structlog in front, stdlib logging underneath.

Our own code logs through :func:`get_logger`; third-party libraries (aiortc, aioice, aiohttp) log
through the standard library. Both end up in one handler on stderr, rendered the same way, with an
ISO timestamp, the level, the logger name and whatever was bound in :mod:`structlog.contextvars`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
import structlog.tracebacks
from structlog.typing import Processor

LogFormat = Literal["console", "json"]

LEVELS = ("debug", "info", "warning", "error", "critical")

#: Libraries that log routine progress at INFO (aioice: every connectivity check). They are held at
#: WARNING unless the level asked for is DEBUG.
CHATTY_LOGGERS = ("aioice",)


def configure_logging(fmt: LogFormat = "console", level: str = "info") -> None:
    """Route structlog and stdlib logging to one stderr handler; safe to call again."""
    numeric_level = _parse_level(level)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(ignore_frame_names=[__name__]),
        wrapper_class=structlog.stdlib.BoundLogger,
        # not cached: loggers created at import time follow a later configure_logging() call
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_renderers(fmt),
            ],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))
    logging.captureWarnings(True)


def get_logger(**bound: Any) -> structlog.stdlib.BoundLogger:
    """A logger with ``bound`` key/values on every line (resolved lazily, at first use)."""
    return structlog.stdlib.get_logger(**bound)


def _parse_level(level: str) -> int:
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    return logging.getLevelNamesMapping()[level.upper()]


def _renderers(fmt: LogFormat) -> list[Processor]:
    if fmt == "json":
        # tracebacks as structured data, without local variables (they may hold SDP or user input)
        tracebacks = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        return [
            structlog.processors.ExceptionRenderer(tracebacks),
            structlog.processors.JSONRenderer(),
        ]
    if fmt == "console":
        return [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    raise ValueError(f"unknown log format {fmt!r}; expected 'console' or 'json'")
