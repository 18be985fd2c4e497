"""``sfu serve`` with CPython's garbage collector watched: every collection's generation and pause.

    python -m benchmarks.gc_probe serve --port 0 --ice-host 127.0.0.1
    python -m benchmarks.forwarding --forwarders aiosfu --server-module benchmarks.gc_probe

A collection stops the event loop; while it runs, datagrams wait in the socket buffer. Every
``REPORT_EVERY`` seconds one line goes to stderr: per generation, how many collections ran, their
longest pause and their total, and the objects the collector tracks.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from typing import Any

from signaling.cli import main

REPORT_EVERY = 5.0


class GcWatch:
    def __init__(self) -> None:
        self._started = 0.0
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.count = [0, 0, 0]
        self.longest = [0.0, 0.0, 0.0]
        self.total = [0.0, 0.0, 0.0]

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = int(info["generation"])
        with self._lock:
            self.count[generation] += 1
            self.total[generation] += pause
            self.longest[generation] = max(self.longest[generation], pause)

    def report(self) -> None:
        while True:
            time.sleep(REPORT_EVERY)
            with self._lock:
                parts = [
                    f"gen{g}: {self.count[g]} x, longest {self.longest[g] * 1e3:.1f} ms, "
                    f"total {self.total[g] * 1e3:.1f} ms"
                    for g in range(3)
                ]
                self._reset()
            tracked = len(gc.get_objects())
            print(f"gc-probe {'; '.join(parts)}; tracked {tracked}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    watch = GcWatch()
    gc.callbacks.append(watch.callback)
    threading.Thread(target=watch.report, daemon=True).start()
    main()
