"""A py-spy profile of the forwarder during a measured window, and its top functions.

py-spy samples the process from outside (``--nonblocking``: without pausing it), so the
forwarder runs unmodified. Idle samples (the event loop waiting in epoll) are left out, so the
shares below are of the time the server was on a CPU running Python or the C code it called.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

RATE = 200  # samples/s


def py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def record_profile(pid: int, seconds: float, output: Path) -> None:
    """Sample ``pid`` for ``seconds`` into ``output`` (collapsed stacks, one per line)."""
    argv = [py_spy(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    argv += ["--rate", str(RATE), "--format", "raw", "--function", "--nonblocking"]
    argv += ["--output", str(output)]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0 or not output.exists():
        raise RuntimeError(f"py-spy failed: {result.stderr.strip()[-2000:]}")


@dataclass(frozen=True, slots=True)
class Entry:
    function: str
    samples: int
    share: float  # of all samples


@dataclass(frozen=True, slots=True)
class Profile:
    samples: int
    by_self: list[Entry]
    by_total: list[Entry]


def summarize(raw: str, top: int = 15) -> Profile:
    """Self time (a function at the top of the stack) and total time (anywhere on it)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count

    def entries(counter: Counter[str]) -> list[Entry]:
        return [Entry(f, n, n / samples) for f, n in counter.most_common(top)]

    return Profile(samples, entries(own), entries(total))
