"""The server's side of the story, from its ``/metrics`` (when it has one).

CPU and memory come from prometheus-client's process metrics; the forwarding-time histogram and
packet counters from aiosfu's own (docs/operations.md). Any server that exposes the standard
``process_*`` metrics gives CPU and memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT = 3.0
HISTOGRAM = "sfu_forwarding_latency_seconds"
#: the label ``sfu serve --workers N`` gives each worker's samples (docs/operations.md)
WORKER_LABEL = "worker"


def metrics_url(server_url: str) -> str:
    """``ws://h:p/ws`` or ``http://h:p`` -> ``http://h:p/metrics``."""
    parts = urlsplit(server_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "/metrics", "", ""))


@dataclass(frozen=True, slots=True)
class Scrape:
    at: float  # time.perf_counter() of the load generator
    samples: dict[str, float] = field(default_factory=dict)

    def get(self, name: str, default: float = 0.0) -> float:
        return self.samples.get(name, default)

    def total(self, name: str) -> float:
        """Sum of a counter over its labels (``name{...}`` samples, or the bare one)."""
        prefix = name + "{"
        return sum(v for k, v in self.samples.items() if k == name or k.startswith(prefix))

    def buckets(self, histogram: str = HISTOGRAM) -> list[tuple[float, float]]:
        prefix = f"{histogram}_bucket{{le="
        result = []
        for key, value in self.samples.items():
            if key.startswith(prefix):
                bound = key[len(prefix) : -1]
                result.append((math.inf if bound == "+Inf" else float(bound), value))
        return sorted(result)


def parse(text: str, at: float) -> Scrape:
    """The samples by name and labels, summed over ``worker`` (``sfu serve --workers N`` labels
    each worker's samples with it): the server as one, as ``sum without (worker)`` would."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(
                f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != WORKER_LABEL
            )
            key = f"{sample.name}{{{labels}}}" if labels else sample.name
            samples[key] = samples.get(key, 0.0) + sample.value
    return Scrape(at, samples)


def merge(scrapes: Sequence[Scrape | None]) -> Scrape | None:
    """Several nodes' scrapes (taken at one instant) as one, every sample summed: CPU seconds,
    RSS, counters, histogram buckets and participants of the whole cluster. None unless every
    node answered."""
    present = [s for s in scrapes if s is not None]
    if not present or len(present) < len(scrapes):
        return None
    if len(present) == 1:
        return present[0]
    samples: dict[str, float] = {}
    for scrape in present:
        for name, value in scrape.samples.items():
            samples[name] = samples.get(name, 0.0) + value
    return Scrape(present[0].at, samples)


class ServerMetrics:
    """Scrapes one server; after three failures in a row it stops trying."""

    def __init__(self, session: aiohttp.ClientSession, server_url: str) -> None:
        self.url = metrics_url(server_url)
        self.error: str | None = None
        self._session = session
        self._failures = 0

    @property
    def available(self) -> bool:
        return self._failures < 3

    async def scrape(self, at: float) -> Scrape | None:
        if not self.available:
            return None
        try:
            timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
            async with self._session.get(self.url, timeout=timeout) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                text = await response.text()
            scrape = parse(text, at)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._failures += 1
            self.error = f"{self.url}: {type(exc).__name__} {exc}".strip()
            return None
        self._failures = 0
        return scrape


def cpu_percent(before: Scrape | None, after: Scrape | None) -> float | None:
    """The server's CPU use between two scrapes, as a percentage of one core."""
    if before is None or after is None or after.at <= before.at:
        return None
    name = "process_cpu_seconds_total"
    if name not in before.samples or name not in after.samples:
        return None
    return 100.0 * (after.get(name) - before.get(name)) / (after.at - before.at)
