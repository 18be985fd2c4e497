"""CPU caps for benchmark processes: one cgroup per capped process, removed at the end.

A cap of a fraction of one core makes a forwarder saturate on a small machine while its load
generators still have room. Either cgroup v2 (``cpu.max``) or the v1 ``cpu`` controller
(``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) is used, whichever this kernel mounts; both need
root. Moving a pid through ``cgroup.procs`` moves all its threads, and its children inherit it.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

CGROUP = Path("/sys/fs/cgroup")
RMDIR_TRIES = 50


class CapError(RuntimeError):
    """No usable cgroup CPU controller (or not root)."""


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """Where the CPU controller lives and how it is spelled there."""

    root: Path
    version: int

    @classmethod
    def find(cls, base: Path = CGROUP) -> Hierarchy:
        controllers = base / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            return cls(base, 2)
        if (base / "cpu" / "cpu.cfs_quota_us").exists():
            return cls(base / "cpu", 1)
        raise CapError(f"no cgroup CPU controller under {base} (cpu.max or cpu.cfs_quota_us)")


class CpuCaps:
    """Cgroups named ``{prefix}-{name}``, each capped at ``quota`` of one core over
    ``period_us``; every one is removed on :meth:`close` (its remaining pids moved back to the
    root first), also when the benchmark fails."""

    def __init__(self, quota: float, period_us: int, prefix: str) -> None:
        if os.geteuid() != 0:
            raise CapError("cgroups need root")
        if not quota > 0:  # also NaN
            raise CapError(f"quota must be positive, not {quota}")
        self.hierarchy = Hierarchy.find()
        self.quota, self.period_us, self.prefix = quota, period_us, prefix
        self.groups: dict[str, Path] = {}
        if self.hierarchy.version == 2:
            # a child of the root gets the cpu interface files only once the root delegates it
            (self.hierarchy.root / "cgroup.subtree_control").write_text("+cpu")

    def cap(self, name: str, pid: int) -> Path:
        """Put ``pid`` (all its threads) into a new cgroup ``name`` under the cap."""
        group = self.hierarchy.root / f"{self.prefix}-{name}"
        group.mkdir()
        self.groups[name] = group
        quota_us = max(1000, round(self.quota * self.period_us))
        if self.hierarchy.version == 2:
            (group / "cpu.max").write_text(f"{quota_us} {self.period_us}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(self.period_us))
            (group / "cpu.cfs_quota_us").write_text(str(quota_us))
        (group / "cgroup.procs").write_text(str(pid))
        return group

    def stats(self) -> dict[str, dict[str, int]]:
        """Each cgroup's ``cpu.stat`` (periods, throttled periods, throttled time)."""
        result = {}
        for name, group in self.groups.items():
            fields: dict[str, int] = {}
            with contextlib.suppress(OSError):
                for line in (group / "cpu.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    fields[key] = int(value)
            result[name] = fields
        return result

    def close(self) -> None:
        for group in self.groups.values():
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (self.hierarchy.root / "cgroup.procs").write_text(pid)
            # a task that is still exiting keeps the group busy for a moment
            for _ in range(RMDIR_TRIES):
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
        self.groups.clear()

    def __enter__(self) -> CpuCaps:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
