"""The client's half of session resume (docs/protocol.md, "Resuming a session").

Pure bookkeeping, no I/O: the token and window the server granted, the highest ``seq`` handled,
and the messages sent since ``joined``, so that after ``resumed`` the client sends again exactly
those the server says it had not read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

#: Messages kept for sending again; a client that sent more than this into a dead socket joins
#: again instead (it cannot know which of the older ones arrived).
KEEP_SENT = 1024
PROTOCOL_VERSION = 1


class ResumeState:
    """What a client needs to resume: fed every message in and out."""

    def __init__(self, keep: int = KEEP_SENT) -> None:
        self.token: str | None = None
        self.window = 0.0
        #: the highest ``seq`` handled
        self.last_seq = 0
        self._sent: deque[str] = deque(maxlen=keep)
        self._sent_total = 0  # messages sent since joined, as the server counts them

    @property
    def possible(self) -> bool:
        return self.token is not None and self.window > 0

    def granted(self, reply: Mapping[str, Any]) -> None:
        """From ``joined`` or ``resumed``: the token to use next time (absent: resume is off)."""
        token, window = reply.get("resumeToken"), reply.get("resumeWindow")
        self.token = token if isinstance(token, str) and token else None
        self.window = float(window) if isinstance(window, int | float) else 0.0

    def received(self, message: Mapping[str, Any]) -> bool:
        """Note a server message's ``seq``; False for one handled already (skip it)."""
        seq = message.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return True
        if seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True

    def sent(self, text: str) -> None:
        """A message sent (or meant to be sent) after ``joined``."""
        self._sent.append(text)
        self._sent_total += 1

    def message(self) -> dict[str, Any]:
        """The ``resume`` to send on a new WebSocket."""
        if self.token is None:
            raise ValueError("no resume token: the server granted none")
        token, last_seq = self.token, self.last_seq
        return {"type": "resume", "v": PROTOCOL_VERSION, "token": token, "lastSeq": last_seq}

    def to_send_again(self, read: int) -> list[str] | None:
        """After ``resumed`` with ``received`` = ``read``: the messages to send again, in order,
        and forgets them (sending them records them again). None when some are no longer kept
        or the count makes no sense: the session cannot go on."""
        missing = self._sent_total - read
        if missing < 0 or missing > len(self._sent):
            return None
        again = [self._sent.pop() for _ in range(missing)][::-1]
        self._sent_total = read
        return again
