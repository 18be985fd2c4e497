"""sfu.media.udp_routes: the shared UDP port's routing tables, table-driven."""

from __future__ import annotations

import itertools
import random

import pytest

from sfu.media.udp_routes import (
    ICE_CHARS,
    MAX_ADDRESSES,
    MAX_TRANSACTIONS,
    TRANSACTION_TIMEOUT,
    UFRAG_LENGTH,
    UdpRoutes,
)

A, B = ("10.0.0.1", 5000), ("10.0.0.2", 5000)


def routes() -> UdpRoutes[str]:
    return UdpRoutes(random.Random(7).choice)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # (owner, address) learned in order -> who each address routes to
        ([("x", A)], {A: "x", B: None}),
        ([("x", A), ("y", B)], {A: "x", B: "y"}),
        # an authenticated check of y's from x's address: the address moves (a reused NAT port)
        ([("x", A), ("y", A)], {A: "y", B: None}),
        ([("x", A), ("y", A), ("x", A)], {A: "x"}),
        ([("x", A), ("x", A), ("x", B)], {A: "x", B: "x"}),
    ],
)
def test_addresses_route_to_their_latest_authenticated_owner(
    steps: list[tuple[str, tuple[str, int]]], expected: dict[tuple[str, int], str | None]
) -> None:
    table = routes()
    for owner, address in steps:
        table.learn(address, owner)
    assert {address: table.by_address(address) for address in expected} == expected


def test_a_moved_address_leaves_its_former_owner_s_list() -> None:
    table = routes()
    table.learn(A, "x")
    table.learn(B, "x")
    table.learn(A, "y")
    assert table.addresses("x") == [B] and table.addresses("y") == [A]
    table.forget("x")
    assert table.by_address(A) == "y" and table.by_address(B) is None


def test_an_owner_keeps_its_most_recently_learned_addresses() -> None:
    table = routes()
    ports = [("10.0.0.9", 6000 + i) for i in range(MAX_ADDRESSES + 3)]
    for address in ports:
        table.learn(address, "x")
    table.learn(ports[3], "x")  # learned again: the most recent, not evicted next
    table.learn(("10.0.0.9", 7000), "x")
    kept = table.addresses("x")
    assert len(kept) == MAX_ADDRESSES and kept[-2:] == [ports[3], ("10.0.0.9", 7000)]
    assert all(table.by_address(a) is None for a in ports[:3])
    assert table.by_address(ports[4]) is None  # the oldest of the rest went for the new one
    assert table.sizes()[1] == MAX_ADDRESSES


def test_ufrags_are_drawn_unused_and_route_requests_by_their_local_part() -> None:
    # a drawing that repeats itself: the second reservation must draw again
    cycle = itertools.cycle("abcdefghabcdefgh12345678")
    table: UdpRoutes[str] = UdpRoutes(lambda chars: next(cycle))
    first, second = table.reserve_ufrag("x"), table.reserve_ufrag("y")
    assert (first, second) == ("abcdefgh", "12345678")
    assert table.by_ufrag(f"{first}:remote") == "x"
    assert table.by_ufrag(second) == "y"  # no colon: the whole is the local part
    assert table.by_ufrag(f"remote:{first}") is None  # the other side's order


def test_drawn_ufrags_are_ice_chars_of_the_stated_length() -> None:
    table = routes()
    drawn = {table.reserve_ufrag(str(i)) for i in range(500)}
    assert len(drawn) == 500
    assert all(len(u) == UFRAG_LENGTH and set(u) <= set(ICE_CHARS) for u in drawn)


def test_an_ice_restart_replaces_the_ufrag_and_keeps_the_addresses() -> None:
    table = routes()
    old = table.reserve_ufrag("x")
    table.learn(A, "x")
    new = table.reserve_ufrag("x")
    table.release_ufrag(old)
    assert table.by_ufrag(f"{old}:r") is None and table.by_ufrag(f"{new}:r") == "x"
    assert table.by_address(A) == "x"  # the old pair carries media until the new is nominated


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (0.0, "x"),
        (TRANSACTION_TIMEOUT - 0.001, "x"),
        (TRANSACTION_TIMEOUT, None),  # expired: a late response routes nowhere
        (TRANSACTION_TIMEOUT * 2, None),
    ],
)
def test_a_response_routes_by_its_transaction_until_it_expires(
    now: float, expected: str | None
) -> None:
    table = routes()
    table.expect(b"t" * 12, "x", 0.0)
    assert table.by_transaction(b"t" * 12, now) == expected
    assert table.by_transaction(b"u" * 12, now) is None


def test_transactions_end_when_done_swept_or_their_owner_closes() -> None:
    table = routes()
    table.expect(b"1" * 12, "x", 0.0)
    table.expect(b"2" * 12, "x", 10.0)
    table.expect(b"3" * 12, "y", 0.0)
    table.done(b"1" * 12)
    assert table.by_transaction(b"1" * 12, 1.0) is None
    assert table.sweep(TRANSACTION_TIMEOUT + 1) == 1  # 3; 2 has 10 s left
    table.forget("x")
    assert table.sizes() == (0, 0, 0)


def test_an_owner_awaits_a_bounded_number_of_transactions() -> None:
    table = routes()
    ids = [i.to_bytes(12, "big") for i in range(MAX_TRANSACTIONS + 5)]
    for tid in ids:
        table.expect(tid, "x", 0.0)
    table.expect(b"y" * 12, "y", 0.0)
    assert table.sizes()[2] == MAX_TRANSACTIONS + 1
    assert all(table.by_transaction(t, 1.0) is None for t in ids[:5])
    assert table.by_transaction(ids[-1], 1.0) == "x" and table.by_transaction(b"y" * 12, 1.0) == "y"


def test_a_transaction_id_reused_by_another_owner_is_its_now() -> None:
    table = routes()
    table.expect(b"t" * 12, "x", 0.0)
    table.expect(b"t" * 12, "y", 0.0)
    table.forget("x")
    assert table.by_transaction(b"t" * 12, 1.0) == "y"


def test_forget_leaves_other_owners_alone() -> None:
    table = routes()
    ux, uy = table.reserve_ufrag("x"), table.reserve_ufrag("y")
    table.learn(A, "x")
    table.learn(B, "y")
    table.expect(b"t" * 12, "y", 0.0)
    table.forget("x")
    table.forget("x")  # twice: nothing left to forget
    assert table.by_ufrag(ux) is None and table.by_ufrag(uy) == "y"
    assert table.by_address(A) is None and table.by_address(B) == "y"
    assert table.sizes() == (1, 1, 1)


@pytest.mark.parametrize(
    "steps",
    [
        # ("learn", owner, port) or ("forget", owner, None)
        [("learn", "x", 1), ("learn", "x", 1), ("learn", "y", 2)],
        [("learn", "x", 1), ("learn", "y", 1), ("forget", "y", None)],
        [("learn", "x", p) for p in range(MAX_ADDRESSES + 4)] + [("learn", "y", 3)],
        [("learn", "x", 1), ("learn", "y", 2), ("forget", "x", None), ("learn", "y", 1)],
    ],
)
def test_the_address_mirror_stays_the_table(steps: list[tuple[str, str, int | None]]) -> None:
    """What on_address is told, applied to a dict, is always the address table (the C read
    path routes by such a copy)."""
    mirror: dict[tuple[str, int], str] = {}
    told: list[tuple[tuple[str, int], str | None]] = []

    def on_address(address: tuple[str, int], owner: str | None) -> None:
        told.append((address, owner))
        if owner is None:
            del mirror[address]  # only what is there is taken away
        else:
            mirror[address] = owner

    table: UdpRoutes[str] = UdpRoutes(random.Random(7).choice, on_address)
    for step, owner, port in steps:
        if step == "learn":
            assert port is not None
            table.learn(("10.0.0.1", port), owner)
        else:
            table.forget(owner)
        assert mirror == table._addresses
    if steps[:2] == [("learn", "x", 1), ("learn", "x", 1)]:  # learned again: nothing changed
        assert told[:2] == [(("10.0.0.1", 1), "x"), (("10.0.0.1", 2), "y")]
