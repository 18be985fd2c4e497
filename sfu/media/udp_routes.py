"""Which connection a datagram on a shared UDP port belongs to (issue 13: one port per worker).

When every peer connection of a process shares one UDP socket, the first byte of a datagram says
what it is (RFC 7983 §7: 0-3 STUN, 20-63 DTLS, 128-191 RTP/RTCP) and this table says whose:

- a STUN **request** by the local ICE username fragment in its USERNAME attribute, the part before
  the colon (RFC 8445 §7.2.2): it names the connection exactly, from whatever address it comes;
- a STUN **response** by the transaction id of the request it answers (RFC 8489 §6), which the
  sending connection registered with :meth:`UdpRoutes.expect`;
- **everything else** (DTLS, SRTP, SRTCP, STUN indications) by its source address, which a
  connection learns only from a check that passed MESSAGE-INTEGRITY with its own password: a
  forged source costs one lookup and teaches nothing. An address an authenticated check of
  another connection comes from moves to that one (a NAT that reused a port for another client
  heals at that client's first check); each connection keeps at most :data:`MAX_ADDRESSES`, the
  least recently learned going first.

The username fragments are drawn here (:data:`UFRAG_LENGTH` ice-chars, RFC 8839 §5.4, re-drawn
until unused): aioice's 4 random characters collide among a thousand connections about 3 % of the
time, and on one port a collision would route one peer's checks to another.

Pure: no sockets, no clock (the caller passes ``now``); the owners are whatever the caller keys
connections by. The design is in docs/design/scale-out-plan.md §2.2.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Owner = TypeVar("Owner", bound=Hashable)
Address = tuple[str, int]

#: ice-char (RFC 8839 §5.4): ALPHA / DIGIT / "+" / "/".
ICE_CHARS = string.ascii_letters + string.digits + "+/"
#: Characters in a drawn username fragment: 64**8 values, no collision in practice.
UFRAG_LENGTH = 8
#: Source addresses one connection keeps: its candidate pairs' remote ends (host, server- and
#: peer-reflexive, relayed, each per address family) with room for a restart's new ones.
MAX_ADDRESSES = 8
#: A transaction not answered within this long is forgotten (s): aioice retransmits a request
#: for at most 39.5 s (RFC 8489 §6.2.1 Rc = 7, RTO 500 ms), 63.5 s with its own longer waits.
TRANSACTION_TIMEOUT = 64.0
#: Transactions one connection may await at once; more evict its oldest (its checklist paces
#: checks, RFC 8445 §6.1.4.2: dozens at most).
MAX_TRANSACTIONS = 256


class UdpRoutes(Generic[Owner]):
    """The shared port's routing tables (see the module docstring)."""

    def __init__(
        self,
        draw: Callable[[str], str] = secrets.choice,
        on_address: Callable[[Address, Owner | None], object] | None = None,
    ) -> None:
        self._draw = draw  # picks one character: secrets.choice, or a seeded one in tests
        #: told every change of the address table (None: the address no longer routes), so
        #: that a faster copy of it (the C read path's) stays the same
        self._on_address = on_address
        self._ufrags: dict[str, Owner] = {}
        self._addresses: dict[Address, Owner] = {}
        #: per owner, its addresses, least recently learned first
        self._learned: dict[Owner, dict[Address, None]] = {}
        #: transaction id -> (owner, expiry); per owner, its ids, oldest first
        self._transactions: dict[bytes, tuple[Owner, float]] = {}
        self._awaited: dict[Owner, dict[bytes, None]] = {}

    # --- username fragments (STUN requests) ---

    def reserve_ufrag(self, owner: Owner) -> str:
        """A new username fragment for ``owner``, unused by any other; it routes requests to
        ``owner`` until :meth:`release_ufrag` or :meth:`forget`."""
        while True:
            ufrag = "".join(self._draw(ICE_CHARS) for _ in range(UFRAG_LENGTH))
            if ufrag not in self._ufrags:
                self._ufrags[ufrag] = owner
                return ufrag

    def release_ufrag(self, ufrag: str) -> None:
        """``ufrag`` no longer routes (an ICE restart replaced it, RFC 8445 §9)."""
        self._ufrags.pop(ufrag, None)

    def by_ufrag(self, username: str) -> Owner | None:
        """The owner of a request whose USERNAME is ``username`` ("local:remote")."""
        return self._ufrags.get(username.partition(":")[0])

    # --- source addresses (everything but STUN requests and responses) ---

    def learn(self, address: Address, owner: Owner) -> None:
        """An authenticated check of ``owner``'s came from (or reached) ``address``."""
        previous = self._addresses.get(address)
        if previous is not None and previous != owner:
            theirs = self._learned[previous]
            del theirs[address]
            if not theirs:
                del self._learned[previous]
        self._addresses[address] = owner
        if previous != owner and self._on_address is not None:
            self._on_address(address, owner)
        learned = self._learned.setdefault(owner, {})
        learned.pop(address, None)  # learned again: the most recent now
        learned[address] = None
        while len(learned) > MAX_ADDRESSES:
            oldest = next(iter(learned))
            del learned[oldest]
            self._unroute(oldest)

    def by_address(self, address: Address) -> Owner | None:
        return self._addresses.get(address)

    def addresses(self, owner: Owner) -> list[Address]:
        """``owner``'s addresses, least recently learned first."""
        return list(self._learned.get(owner, ()))

    # --- transactions (STUN responses) ---

    def expect(self, transaction_id: bytes, owner: Owner, now: float) -> None:
        """``owner`` sent a request with ``transaction_id``: route its response to it."""
        self._drop_transaction(transaction_id)
        self._transactions[transaction_id] = (owner, now + TRANSACTION_TIMEOUT)
        awaited = self._awaited.setdefault(owner, {})
        awaited[transaction_id] = None
        while len(awaited) > MAX_TRANSACTIONS:
            self._drop_transaction(next(iter(awaited)))

    def by_transaction(self, transaction_id: bytes, now: float) -> Owner | None:
        entry = self._transactions.get(transaction_id)
        if entry is None:
            return None
        if now >= entry[1]:
            self._drop_transaction(transaction_id)
            return None
        return entry[0]

    def done(self, transaction_id: bytes) -> None:
        """The transaction ended (answered, or given up by its sender)."""
        self._drop_transaction(transaction_id)

    def sweep(self, now: float) -> int:
        """Forget the transactions past their expiry; how many."""
        expired = [t for t, (_, expiry) in self._transactions.items() if now >= expiry]
        for transaction_id in expired:
            self._drop_transaction(transaction_id)
        return len(expired)

    # --- a connection closed ---

    def forget(self, owner: Owner) -> None:
        """Every route to ``owner`` goes: its ufrags, addresses and transactions."""
        for ufrag in [u for u, o in self._ufrags.items() if o == owner]:
            del self._ufrags[ufrag]
        for address in self._learned.pop(owner, {}):
            self._unroute(address)
        for transaction_id in list(self._awaited.get(owner, ())):
            self._drop_transaction(transaction_id)
        self._awaited.pop(owner, None)

    def sizes(self) -> tuple[int, int, int]:
        """(ufrags, addresses, transactions) held: what a leak would grow."""
        return len(self._ufrags), len(self._addresses), len(self._transactions)

    def _unroute(self, address: Address) -> None:
        del self._addresses[address]
        if self._on_address is not None:
            self._on_address(address, None)

    def _drop_transaction(self, transaction_id: bytes) -> None:
        entry = self._transactions.pop(transaction_id, None)
        if entry is not None:
            awaited = self._awaited.get(entry[0])
            if awaited is not None:
                awaited.pop(transaction_id, None)
                if not awaited:
                    del self._awaited[entry[0]]
