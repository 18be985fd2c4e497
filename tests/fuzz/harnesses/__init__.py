"""Fuzz harnesses, one per parser or state machine of ours that untrusted input reaches.

Each module has ``run(data: bytes)``, which raises only on a defect (an exception the parser
does not document, or a broken invariant: AssertionError), and ``seeds()``, valid inputs the
fuzzer starts from. ``scripts/fuzz`` runs them under atheris (coverage-guided) or, without it,
on random mutations of the seeds; tests/fuzz/test_*.py run them under hypothesis.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

#: target name -> module under tests.fuzz.harnesses
TARGETS = {
    "rtp": "rtp",
    "rtcp": "rtcp",
    "twcc": "twcc",
    "bwe": "bwe",
    "ingress": "ingress",
    "vp8": "vp8",
    "streams": "streams",
    "signaling": "signaling",
    "tokens": "tokens",
    "sdp": "sdp",
    "sdp_apply": "sdp_apply",
    "candidate": "candidate",
    "wire": "wire",
}


def harness(name: str) -> ModuleType:
    return importlib.import_module(f"tests.fuzz.harnesses.{TARGETS[name]}")


def runner(name: str) -> Callable[[bytes], None]:
    run: Callable[[bytes], None] = harness(name).run
    return run
