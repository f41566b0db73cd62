"""Attacks of the security review (issues 13 and 15) that need the real
InfluxDB 1.x behind ``fluxgate serve`` (Debian's influxd 1.6.7). The rest
of the review's tests run against capturing upstreams in ``tests/attacks``.

F3: public routes (``/ping``) forward the caller's body, unbounded and
untimed, and influxd answers ``/ping`` only once the body is complete: an
unauthenticated client holds one proxy->influxd connection per request
until ``--upstream-timeout`` and leaves the proxy a 504.
"""

from __future__ import annotations

import socket
import time

import pytest

from support.fluxgate import FluxgateServe
from support.ports import LOOPBACK


@pytest.fixture(scope="module")
def serve(influxdb, fluxgate_bin, tmp_path_factory):
    args = ["--upstream-timeout", "20s", "--body-read-timeout", "2s"]
    with FluxgateServe(fluxgate_bin, tmp_path_factory.mktemp("attacks") / "data", influxdb.url,
                       extra_args=args) as s:
        yield s


def status_line(port: int, head: bytes, wait: float) -> str | None:
    with socket.create_connection((LOOPBACK, port)) as sock:
        sock.settimeout(wait)
        sock.sendall(head)
        try:
            data = sock.recv(256)
        except socket.timeout:
            return None
        return data.split(b"\r\n", 1)[0].decode("latin-1") if data else None


def test_influxd_itself_waits_for_the_ping_body(influxdb):
    """The premise, checked on influxd directly: no answer before the body ends."""
    head = b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc"
    assert status_line(influxdb.port, head, 2.0) is None


def test_an_unfinished_ping_body_does_not_hold_influxd(serve):
    head = b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc"
    started = time.monotonic()
    line = status_line(serve.port, head, 6.0)
    waited = time.monotonic() - started
    assert line is not None and " 5" not in line, (
        f"an unauthenticated GET /ping with an unfinished body got {line!r} after {waited:.1f} s: "
        "the proxy held a connection to influxd for it (until --upstream-timeout)"
    )
