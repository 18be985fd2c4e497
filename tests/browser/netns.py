"""Move the calling thread into a fresh network namespace that has only a loopback interface.

Chromium gathers ICE candidates on every interface it sees, and the server answers connectivity
checks from any of them (peer-reflexive candidates), so a browser on a machine with an eth0 would
make the server send to that address. In a namespace of our own, 127.0.0.1 is all there is.

A network namespace is a property of a thread: sockets and processes created by this thread while
it is inside (the server, playwright's driver and so Chromium, aiortc clients) stay there; the
thread goes back to its original namespace on exit. Needs CAP_SYS_ADMIN (root).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFREQ = "16sh22x"  # struct ifreq: name, flags (the rest of the union unused)

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _bring_up(interface: str) -> None:
    name = interface.encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        current = fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack(IFREQ, name, 0))
        flags = struct.unpack(IFREQ, current)[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(IFREQ, name, flags | IFF_UP))


@contextlib.contextmanager
def loopback_only_network() -> Iterator[None]:
    """Run the body in a new network namespace with ``lo`` up (raises OSError if not allowed)."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            _bring_up("lo")
            yield
        finally:
            _check(_libc.setns(original, CLONE_NEWNET), "setns back to the original namespace")
    finally:
        os.close(original)
