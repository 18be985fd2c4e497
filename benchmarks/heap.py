"""What a Python process's heap holds, told apart from what its allocators merely keep.

Run inside the measured process (benchmarks/memory_probe.py calls :func:`census`). Three views:

- **live objects**: ``gc.get_objects()`` counted by type (container objects only: ``bytes`` and
  ``str`` are not tracked by the collector), after a full collection, with the classes whose
  instances belong to one participant (:data:`WATCHED`) always listed. Instances of those still
  alive after every participant left are a leak. What the server froze at startup
  (``sfu.memory.freeze_startup``) is not listed, only counted (``frozen_objects``).
- **pymalloc** (objects of ≤ 512 bytes): ``sys._debugmallocstats()`` — bytes in allocated
  blocks (live), in free blocks of arenas still mapped (fragmentation: an arena returns to the
  OS only once all its blocks are free), and the arenas mapped.
- **glibc malloc** (larger objects and C libraries: OpenSSL, libsrtp, aiohttp's buffers):
  ``mallinfo2()`` — bytes in use and bytes free but kept by malloc, and what ``malloc_trim(0)``
  gives back to the OS (:func:`trim`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Classes with one or a few instances per participant (or per m-line); their count after
#: everyone left must return to the baseline.
WATCHED = (
    "sfu.participant.Participant",
    "sfu.participant.Subscription",
    "sfu.room.Room",
    "sfu.media.connection.MediaConnection",
    "sfu.media.aiortc_bridge.ServerPeerConnection",
    "sfu.media.aiortc_bridge.MediaTransport",
    "sfu.media.receiver.TrackReceiver",
    "sfu.media.layer.LayerReceiver",
    "sfu.media.downtrack.DownTrack",
    "sfu.media.downtrack.OutgoingStream",
    "signaling.session.SignalingSession",
    "aiohttp.web_ws.WebSocketResponse",
    "aiohttp.web_protocol.RequestHandler",
    "sfu.media.munger.RtpMunger",
    "sfu.media.params.MediaParams",
    "sfu.media.params.Codec",
    "sfu.media.aiortc_bridge._InertSender",
    "sfu.media.aiortc_bridge._InertReceiver",
    "aiortc.rtcrtptransceiver.RTCRtpTransceiver",
    "aiortc.rtcrtpparameters.RTCRtpCodecParameters",
    "aiortc.rtcrtpparameters.RTCRtcpFeedback",
    "aiortc.rtcrtpparameters.RTCRtpHeaderExtensionParameters",
    "aiortc.rtcdtlstransport.RTCDtlsTransport",
    "aiortc.rtcdtlstransport.RTCCertificate",
    "aiortc.rtcicetransport.RTCIceTransport",
    "aiortc.rtcicetransport.RTCIceGatherer",
    "aiortc.sdp.SessionDescription",
    "aiortc.sdp.MediaDescription",
    "aioice.ice.Connection",
    "aioice.ice.StunProtocol",
    "aioice.ice.CandidatePair",
    "OpenSSL.SSL.Connection",
    "OpenSSL.SSL.Context",
    "_asyncio.Task",
    "_asyncio.Future",
    "_contextvars.Context",
    "structlog._config.BoundLoggerLazyProxy",
    "structlog.stdlib.BoundLogger",
)
TOP_TYPES = 60


def type_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def object_counts() -> Counter[str]:
    """Live gc-tracked objects by type, after a full collection."""
    gc.collect()
    return Counter(type_name(o) for o in gc.get_objects())


def pymalloc_stats() -> dict[str, int]:
    """The totals of ``sys._debugmallocstats()`` (it writes to the C stderr: captured)."""
    text = _capture_stderr(sys._debugmallocstats)
    wanted = {
        "# arenas allocated current": "arenas",
        "# bytes in allocated blocks": "allocated_bytes",
        "# bytes in available blocks": "free_bytes",
        "unused pools": "unused_pool_bytes",
        "# bytes lost to pool headers": "pool_header_bytes",
        "# bytes lost to quantization": "quantization_bytes",
        "# bytes lost to arena alignment": "alignment_bytes",
        "Total": "total_bytes",
    }
    stats: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if key.endswith("unused pools * 16384 bytes"):  # "37 unused pools * 16384 bytes"
            key = "unused pools"
        name = wanted.get(key)
        if sep and name is not None and name not in stats:
            with contextlib.suppress(ValueError):
                stats[name] = int(value.strip().replace(",", ""))
    return stats


def _capture_stderr(function: Any) -> str:
    """Run ``function`` with file descriptor 2 sent to a temporary file; return what it wrote."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        try:
            os.dup2(capture.fileno(), 2)
            function()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        return capture.read().decode(errors="replace")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> Any:
    with contextlib.suppress(OSError):
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return None


_LIBC = _libc()


def malloc_stats() -> dict[str, int]:
    """glibc's ``mallinfo2()``: bytes in use, free but kept, and mmapped; empty elsewhere."""
    function = getattr(_LIBC, "mallinfo2", None)
    if function is None:
        return {}
    function.restype = _MallInfo2
    info = function()
    return {
        "heap_bytes": int(info.arena),  # the main and thread arenas (sbrk and mmap'd heaps)
        "in_use_bytes": int(info.uordblks),
        "free_bytes": int(info.fordblks),  # freed, kept by malloc for reuse
        "mmapped_bytes": int(info.hblkhd),  # large blocks, returned to the OS when freed
        "releasable_bytes": int(info.keepcost),
    }


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def trim() -> dict[str, int] | None:
    """``malloc_trim(0)``: RSS before and after (what malloc kept free and now returned)."""
    function = getattr(_LIBC, "malloc_trim", None)
    if function is None:
        return None
    before = rss_kb()
    function(0)
    return {"rss_before_kb": before, "rss_after_kb": rss_kb()}


@dataclass
class Baseline:
    """What a first census saw, for later ones to compare with."""

    counts: Counter[str]
    modules: frozenset[str]


def census(baseline: Baseline | None = None) -> tuple[dict[str, Any], Baseline]:
    """Live objects, pymalloc and malloc totals; with ``baseline``, the types that changed and
    the modules imported since (their objects, allocated among a wave's, pin its arenas)."""
    counts = object_counts()
    modules = frozenset(sys.modules)
    document: dict[str, Any] = {
        "gc_objects": sum(counts.values()),
        "frozen_objects": gc.get_freeze_count(),
        "modules": len(modules),
        "allocated_blocks": sys.getallocatedblocks(),
        "watched": {name: counts.get(name, 0) for name in WATCHED},
        "top_types": counts.most_common(TOP_TYPES),
        "pymalloc": pymalloc_stats(),
        "malloc": malloc_stats(),
    }
    if baseline is not None:
        changed = Counter(counts)
        changed.subtract(baseline.counts)
        ranked = sorted(
            ((name, n) for name, n in changed.items() if n), key=lambda item: -abs(item[1])
        )
        document["types_vs_baseline"] = ranked[:TOP_TYPES]
        document["modules_imported_since_baseline"] = sorted(modules - baseline.modules)
    return document, Baseline(counts, modules)
