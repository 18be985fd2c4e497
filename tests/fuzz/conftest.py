"""Hypothesis profiles for tests/fuzz: short in CI, as long as asked for by hand.

    AIOSFU_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/fuzz -q

No example database: a failure prints its input, and CI leaves no .hypothesis/ behind.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "aiosfu-fuzz",
    max_examples=int(os.environ.get("AIOSFU_FUZZ_EXAMPLES", "200")),
    deadline=None,  # a shared, loaded machine: time per example says nothing
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("aiosfu-fuzz")
