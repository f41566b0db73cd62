"""Shared fixtures for the Python test suite (run by .ci/run).

* ``influxdb``: a real influxd 1.x (Debian's /usr/bin/influxd) on 127.0.0.1,
  one per test session. Skipped only when influxd is missing on a developer
  machine; under CI (env CI set) a missing influxd is an error.
* ``fluxgate_bin``: Path of the fluxgate binary, from env FLUXGATE_BIN
  (default <repo>/target/debug/fluxgate); fails clearly when it is absent.

Helpers live in ``support/`` (this directory is put on sys.path by pytest's
rootdir-relative conftest import): ``support.ports``, ``support.process``,
``support.influxdb``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.influxdb import DEFAULT_INFLUXD, InfluxDB1

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLUXGATE_BIN = REPO_ROOT / "target" / "debug" / "fluxgate"


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def influxd_path() -> str:
    return os.environ.get("INFLUXD_BIN") or DEFAULT_INFLUXD


@pytest.fixture(scope="session")
def influxdb():
    """A running influxd 1.x bound to 127.0.0.1 (``.url``, ``.port``, ``.pid``)."""
    path = influxd_path()
    if not os.access(path, os.X_OK):
        message = (
            f"{path} not found: install Debian's influxdb package "
            "(apt-get install --no-install-recommends influxdb), as .ci/run does"
        )
        if running_in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    server = InfluxDB1(path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fluxgate_bin() -> Path:
    """Path of the fluxgate binary built by cargo."""
    path = Path(os.environ.get("FLUXGATE_BIN") or DEFAULT_FLUXGATE_BIN)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"fluxgate binary not found at {path} (set FLUXGATE_BIN, or run "
            "`cargo build` first; .ci/run does both)",
            pytrace=False,
        )
    return path
