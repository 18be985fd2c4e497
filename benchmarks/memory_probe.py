"""``sfu serve`` with tracemalloc on: each SIGUSR1 writes where the server's memory was allocated.

    python -m benchmarks.memory_probe serve --port 0 --ice-host 127.0.0.1
    python -m benchmarks.memory --tracemalloc        # runs the server this way
    MEMORY_PROBE_FRAMES=0 python -m benchmarks.memory_probe serve ...   # census only (churn.py)

Every SIGUSR1 runs a full garbage collection, takes a tracemalloc snapshot, groups the live
allocations by the line that made them (``filename:lineno``, :data:`TOP` largest), also by the
innermost line outside the standard library on the allocation's traceback (the "owner": aiortc's
line that made an ``asyncio.Event``, not asyncio's) and by that line's file and package, and writes
them as JSON to ``$MEMORY_PROBE_OUT`` (default: ``aiosfu-memory-probe-<pid>.json`` in the
temporary directory), together with the difference from the previous SIGUSR1's snapshot: what the
server allocated, and still holds, in between. Only the per-line totals of the previous snapshot
are kept, not the snapshot. The collection first makes the snapshot show what is held, not cyclic
garbage that happened to be waiting for the collector (which RSS does include); what it freed is
reported too.

Every snapshot also holds a census of the heap (benchmarks/heap.py): live objects by type (the
classes of one participant always listed, and the types that changed since the first snapshot),
pymalloc's and glibc malloc's totals. SIGUSR2 does the same and then calls ``malloc_trim(0)``,
recording RSS before and after (what malloc kept free). With ``$MEMORY_PROBE_FRAMES`` = 0
tracemalloc stays off: the census costs no CPU until a signal comes, and RSS is the server's own.

tracemalloc costs memory (its traces; ``$MEMORY_PROBE_FRAMES`` frames, default
:data:`DEFAULT_FRAMES`, are kept per allocation) and CPU (every allocation is traced), so a run
with the probe shows where memory goes, not how much.
The signal handler only starts a thread that takes the snapshot and writes the file (many seconds
with a hundred participants): the event loop keeps running meanwhile (slower, sharing the GIL),
so no participant times out. The thread ends when the file is written.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import heap
from signaling.cli import main

TOP = 30
DEFAULT_FRAMES = 12  # deep enough to find who, outside the standard library, allocated
OUT_ENV = "MEMORY_PROBE_OUT"
FRAMES_ENV = "MEMORY_PROBE_FRAMES"
# allocations made by these files (innermost frame) are left out: tracemalloc's, the probe's own
_IGNORED = frozenset(
    (
        tracemalloc.__file__,
        __file__,
        "<frozen importlib._bootstrap>",
        "<frozen importlib._bootstrap_external>",
        "<unknown>",
    )
)

Sites = dict[str, tuple[int, int]]  # "file:line" -> (bytes, blocks)


def default_output(pid: int) -> Path:
    return Path(tempfile.gettempdir()) / f"aiosfu-memory-probe-{pid}.json"


_REPO = str(Path(__file__).resolve().parents[1]) + "/"


@functools.cache
def short_path(filename: str) -> str:
    """A source file as a reader knows it: ``aiortc/rtcdtlstransport.py``, ``sfu/room.py``."""
    for marker in ("site-packages/", "dist-packages/"):
        if marker in filename:
            return filename.rsplit(marker, 1)[1]
    if filename.startswith(_REPO):
        return filename[len(_REPO) :]
    if "/lib/python3" in filename:  # the standard library
        return "stdlib/" + filename.rsplit("/lib/python3", 1)[1].split("/", 1)[1]
    return filename


def _is_library(path: str) -> bool:
    """The standard library and generated code (a dataclass's ``__init__`` is ``<string>``)."""
    return path.startswith(("stdlib/", "<"))


@dataclass
class Groups:
    """Live allocations grouped three ways."""

    lines: Sites = field(default_factory=dict)  # by the line that allocated
    owners: Sites = field(default_factory=dict)  # by the innermost frame outside the stdlib
    files: Sites = field(default_factory=dict)  # by that frame's file
    packages: Sites = field(default_factory=dict)  # by that frame's package (aiortc, sfu, ...)


def _add(sites: Sites, key: str, size: int, count: int) -> None:
    size0, count0 = sites.get(key, (0, 0))
    sites[key] = (size0 + size, count0 + count)


def group(snapshot: tracemalloc.Snapshot) -> Groups:
    """An ``asyncio.Event`` made by aiortc is the stdlib line that allocated it, owned by the
    aiortc line that made the Event (when the traceback is deep enough to reach it)."""
    # the snapshot's raw traces, (domain, size, frames, ...) with frames innermost first, grouped
    # by frames first (Snapshot.statistics() and filter_traces() make objects per trace: slow)
    by_frames: dict[tuple[tuple[str, int], ...], list[int]] = {}
    traces: Any = snapshot.traces
    for trace in traces._traces:
        if trace[2][0][0] in _IGNORED:
            continue
        entry = by_frames.get(trace[2])
        if entry is None:
            by_frames[trace[2]] = [trace[1], 1]
        else:
            entry[0] += trace[1]
            entry[1] += 1
    groups = Groups()
    for raw, (size, count) in by_frames.items():
        frames = [(short_path(name), line) for name, line in raw]
        path, line = frames[0]
        _add(groups.lines, f"{path}:{line}", size, count)
        path, line = next(((p, n) for p, n in frames if not _is_library(p)), frames[-1])
        _add(groups.owners, f"{path}:{line}", size, count)
        _add(groups.files, path, size, count)
        package = path.split("/", 1)[0] if not path.startswith("stdlib/") else path
        _add(groups.packages, package, size, count)
    return groups


def top(entries: Sites, n: int = TOP) -> list[list[object]]:
    ranked = sorted(entries.items(), key=lambda item: abs(item[1][0]), reverse=True)
    return [[site, size, count] for site, (size, count) in ranked[:n]]


def diff(now: Sites, before: Sites) -> Sites:
    result: Sites = {}
    for key in now.keys() | before.keys():
        size, count = now.get(key, (0, 0))
        size0, count0 = before.get(key, (0, 0))
        if size != size0 or count != count0:
            result[key] = (size - size0, count - count0)
    return result


class Probe:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.seq = 0
        self.previous = Groups()
        self.baseline: heap.Baseline | None = None  # what the first snapshot's census saw
        self._lock = threading.Lock()
        self._busy = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            if self._busy:
                return  # the snapshot under way answers this signal too
            self._busy = True
        trim = signum == signal.SIGUSR2
        threading.Thread(target=self.write, args=(trim,), name="memory-probe", daemon=True).start()

    def write(self, trim: bool = False) -> None:
        try:
            self._write(trim)
        finally:
            with self._lock:
                self._busy = False

    def _write(self, trim: bool) -> None:
        started = time.perf_counter()
        self.seq += 1
        document: dict[str, Any] = {"seq": self.seq, "pid": os.getpid()}
        if tracemalloc.is_tracing():
            document.update(self._tracemalloc())
        census, baseline = heap.census(self.baseline)
        if self.baseline is None:
            self.baseline = baseline
        document["census"] = census
        if trim:
            document["trim"] = heap.trim()
        document["snapshot_seconds"] = round(time.perf_counter() - started, 3)
        partial = self.out.with_suffix(".tmp")
        partial.write_text(json.dumps(document, indent=1) + "\n")
        partial.replace(self.out)  # the reader never sees half a file
        print(f"memory-probe: snapshot {self.seq} -> {self.out}", file=sys.stderr, flush=True)

    def _tracemalloc(self) -> dict[str, Any]:
        # unreachable cycles (old SDP objects, closed connections) wait for the collector's
        # oldest generation; count them, then snapshot only what is really held
        garbage_from = tracemalloc.get_traced_memory()[0]
        collected = gc.collect()
        garbage = garbage_from - tracemalloc.get_traced_memory()[0]
        snapshot = tracemalloc.take_snapshot()
        current = group(snapshot)
        del snapshot
        traced, peak = tracemalloc.get_traced_memory()
        previous, self.previous = self.previous, current
        grew = diff(current.lines, previous.lines)
        return {
            "frames": tracemalloc.get_traceback_limit(),
            "traced_bytes": traced,
            "gc_collected_objects": collected,
            "gc_freed_bytes": garbage,
            "traced_peak_bytes": peak,
            "tracemalloc_overhead_bytes": tracemalloc.get_tracemalloc_memory(),
            "total_bytes": sum(size for size, _ in current.lines.values()),
            "total_blocks": sum(count for _, count in current.lines.values()),
            "top": top(current.lines),
            # what was allocated (and is still held) since the previous snapshot
            "diff_total_bytes": sum(size for size, _ in grew.values()),
            "diff": top(grew),
            "diff_owners": top(diff(current.owners, previous.owners)),
            "diff_files": top(diff(current.files, previous.files)),
            "diff_packages": top(diff(current.packages, previous.packages)),
        }


if __name__ == "__main__":
    frames = int(os.environ.get(FRAMES_ENV, str(DEFAULT_FRAMES)))
    if frames > 0:
        tracemalloc.start(frames)
    probe = Probe(Path(os.environ.get(OUT_ENV) or default_output(os.getpid())))
    signal.signal(signal.SIGUSR1, probe.on_signal)
    signal.signal(signal.SIGUSR2, probe.on_signal)
    main()
