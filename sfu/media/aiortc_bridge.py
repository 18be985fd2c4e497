"""The one module that touches aiortc/aioice internals (pinned: aiortc 1.16.0, aioice 0.13.0).

Everything here relies on private attributes of those packages; tests/unit/test_aiortc_bridge.py
fails loudly when an upgrade moves one of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import aioice.ice

_default_get_host_addresses = aioice.ice.get_host_addresses
_pinned_hosts: tuple[str, ...] = ()


def _pinned_get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return [host for host in _pinned_hosts if (use_ipv6 if ":" in host else use_ipv4)]


def set_ice_host_addresses(hosts: Sequence[str]) -> None:
    """Gather ICE host candidates only on ``hosts`` (process-wide); empty restores the default.

    aioice has no option for this and skips 127.0.0.1, which loopback tests need.
    """
    global _pinned_hosts
    _pinned_hosts = tuple(hosts)
    aioice.ice.get_host_addresses = (
        _pinned_get_host_addresses if _pinned_hosts else _default_get_host_addresses
    )
