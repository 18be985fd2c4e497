"""The live display while a run goes (rich), or nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

if TYPE_CHECKING:
    from loadtest.participant import LoadParticipant
    from loadtest.runner import LoadConfig


class Display(Protocol):
    def start(self, config: LoadConfig, seconds: float) -> None: ...

    def update(self, row: dict[str, Any], participants: Sequence[LoadParticipant]) -> None: ...

    def phase(self, text: str) -> None: ...

    def stop(self) -> None: ...


class NullDisplay:
    def start(self, config: LoadConfig, seconds: float) -> None:
        pass

    def update(self, row: dict[str, Any], participants: Sequence[LoadParticipant]) -> None:
        pass

    def phase(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


class RichDisplay:
    """Two bars (time, participants joined) and a table of the latest second."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            TextColumn("{task.completed:>6.0f}/{task.total:.0f}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._time: TaskID | None = None
        self._joins: TaskID | None = None
        self._status = Text("")
        self._live: Live | None = None
        self._phase = "ramp-up"

    def start(self, config: LoadConfig, seconds: float) -> None:
        self._time = self._progress.add_task("ramp-up (s)", total=seconds)
        self._joins = self._progress.add_task("joined", total=config.total)
        self._live = Live(self._render(), console=self.console, refresh_per_second=2)
        self._live.start()

    def update(self, row: dict[str, Any], participants: Sequence[LoadParticipant]) -> None:
        if self._time is None or self._joins is None or self._live is None:
            return
        if row["phase"] == "hold" and self._phase == "ramp-up":
            self._phase = "hold"
        self._progress.update(self._time, completed=row["t"], description=f"{self._phase} (s)")
        self._progress.update(self._joins, completed=row["joined"])
        self._status = Text.assemble(
            ("joined ", "dim"),
            f"{row['joined']}/{len(participants)} ({row['failed']} failed)",
            ("   loss ", "dim"),
            _fmt(row["loss_percent"], " %", 2),
            ("   rx ", "dim"),
            f"{_fmt(row['rx_kbps'] / 1000, digits=2)} Mbit/s, "
            f"{_fmt(row['rx_kbps_per_subscriber'], digits=0)} kbit/s each",
            ("\ne2e ", "dim"),
            f"p50 {_fmt(row['latency_p50_ms'])} p95 {_fmt(row['latency_p95_ms'])} ms",
            ("   CPU ", "dim"),
            f"generator {_fmt(row['generator_cpu_percent'], ' %', 0)}, "
            f"server {_fmt(row['server_cpu_percent'], ' %', 0)}",
            ("   server RSS ", "dim"),
            _fmt(row["server_rss_mb"], " MB", 0),
        )
        self._live.update(self._render())

    def phase(self, text: str) -> None:
        self._phase = text
        if self._time is not None:
            self._progress.update(self._time, description=f"{text}")

    def _render(self) -> Group:
        return Group(self._progress, self._status)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
