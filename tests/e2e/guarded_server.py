"""`sfu serve`, with every aiortc codec and any av codec context made to fail loudly.

The server forwards RTP and never decodes or encodes it. This wrapper proves it: it replaces the
constructors of aiortc's decoder and encoder classes, and aiortc's get_decoder/get_encoder, so that
any attempt prints a marker on stderr (which the test looks for) and raises.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import aiortc.codecs
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aiortc.codecs import base

MARKER = "CODEC-CREATED-ON-SERVER"


def _refuse(what: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        sys.stderr.write(f"{MARKER} {what}\n{''.join(traceback.format_stack())}\n")
        sys.stderr.flush()
        raise RuntimeError(f"{what} must never run on the SFU")

    return refuse


def guard() -> list[str]:
    guarded = []
    for module in (aiortc.codecs, aiortc.rtcrtpreceiver, aiortc.rtcrtpsender):
        for name in ("get_decoder", "get_encoder"):
            if hasattr(module, name):
                setattr(module, name, _refuse(f"{module.__name__}.{name}"))
                guarded.append(f"{module.__name__}.{name}")
    for cls in (*base.Decoder.__subclasses__(), *base.Encoder.__subclasses__()):
        cls.__init__ = _refuse(f"{cls.__module__}.{cls.__name__}()")  # type: ignore[method-assign]
        guarded.append(cls.__name__)
    return guarded


if __name__ == "__main__":
    names = guard()
    sys.stderr.write(f"guarded: {', '.join(names)}\n")
    from signaling.cli import main

    main()
