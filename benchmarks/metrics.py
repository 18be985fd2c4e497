"""SFU-internal forwarding latency from the server's Prometheus ``/metrics``, when it has one.

The server is looked at twice (before and after the measured window); the difference of a
forwarding-latency histogram's cumulative buckets gives the window's distribution, and percentiles
are interpolated linearly inside the bucket that holds them (as PromQL's histogram_quantile).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

from benchmarks.processes import Network

_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)_bucket\{(.*)\}\s+(\S+)")
_LE = re.compile(r'le="([^"]+)"')
_FETCH = (
    "import sys, urllib.request\n"
    "try:\n"
    "    sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n"
    "except Exception:\n"
    "    sys.exit(1)\n"
)

Buckets = dict[float, float]  # upper bound (seconds) -> cumulative count


def fetch(network: Network, url: str) -> str | None:
    """GET ``url`` from inside the benchmark's network (the server may be in a namespace)."""
    argv = network.command([sys.executable, "-c", _FETCH, url])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    return result.stdout if result.returncode == 0 else None


def forwarding_histogram(text: str) -> tuple[str, Buckets] | None:
    """The first histogram whose name speaks of forwarding latency, summed over its labels."""
    families: dict[str, Buckets] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        if "forward" not in name or not ("latency" in name or "seconds" in name):
            continue
        le = _LE.search(labels)
        if le is None:
            continue
        bound = math.inf if le.group(1) == "+Inf" else float(le.group(1))
        buckets = families.setdefault(name, {})
        buckets[bound] = buckets.get(bound, 0.0) + float(value)
    for name, buckets in families.items():
        return name, buckets
    return None


def quantile(q: float, before: Buckets, after: Buckets) -> float | None:
    """The ``q`` quantile (0..1) of what was observed between two scrapes, in seconds."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            width = count - lower_count
            fraction = (rank - lower_count) / width if width > 0 else 1.0
            return lower_bound + (bound - lower_bound) * fraction
        lower_bound, lower_count = bound, count
    return None
