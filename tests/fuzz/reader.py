"""Turn a fuzzer's raw bytes into structured choices, without atheris.

atheris has its own FuzzedDataProvider, but the harnesses must also run in plain random mode
(scripts/fuzz --random) and under hypothesis (st.binary()), so they read their input with this.
Past the end of the input every read returns zeros: any byte string is a valid input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def more(self) -> bool:
        return self.pos < len(self.data)

    def uint(self, size: int = 1) -> int:
        """The next ``size`` bytes, big-endian."""
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return int.from_bytes(chunk.ljust(size, b"\0"), "big")

    def below(self, n: int) -> int:
        """A number in 0..n-1 (n <= 65536)."""
        return self.uint(1 if n <= 256 else 2) % n

    def flag(self) -> bool:
        return bool(self.uint() & 1)

    def take(self, size: int) -> bytes:
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def sized(self, limit: int = 255) -> bytes:
        """A length byte, then that many bytes (at most ``limit``)."""
        return self.take(self.uint() % (limit + 1))

    def text(self, limit: int = 255) -> str:
        return self.sized(limit).decode("utf-8", errors="replace")

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk

    def choice(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]
