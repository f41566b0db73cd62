"""Loopback port helpers for the test suite.

Every server a test starts listens on 127.0.0.1 only, on a port picked here.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    Binds ``host:0``, reads the port the kernel chose, and closes the socket.
    There is a small window in which another process may take the port; the
    callers (``support.process``) detect a server that fails to come up and
    report its log, so a rare collision shows up as a clear error.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct free ports (all sockets held open together,
    so the kernel cannot hand out the same port twice)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
