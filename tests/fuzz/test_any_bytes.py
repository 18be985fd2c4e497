"""Every fuzz target (tests/fuzz/harnesses) under hypothesis: arbitrary bytes, and its seeds
mutated, raise nothing but the parser's documented error (each harness checks that)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harnesses import TARGETS, harness


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    """One of the target's seeds with bytes overwritten, inserted, cut."""
    data = bytearray(draw(st.sampled_from(harness(name).seeds())))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 2))
        if op == 0 and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == 1:
            data[at:at] = draw(st.binary(max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


@pytest.mark.parametrize("name", TARGETS)
@given(data=st.data())
def test_arbitrary_bytes(name: str, data: st.DataObject) -> None:
    harness(name).run(data.draw(st.binary(max_size=2048)))


@pytest.mark.parametrize("name", TARGETS)
@given(data=st.data())
def test_mutated_seeds(name: str, data: st.DataObject) -> None:
    harness(name).run(data.draw(mutated(name)))


@pytest.mark.parametrize("name", TARGETS)
def test_seeds_pass(name: str) -> None:
    module = harness(name)
    for seed in module.seeds():
        module.run(seed)
