"""Shared helpers for the deploy/ checks (run by .ci/run as `pytest deploy/tests`).

This suite runs in its own pytest invocation, so it borrows the process
helpers and fixtures of tests/python explicitly: tests/python is put on
sys.path (for ``support.*``) and its conftest is loaded under another module
name, from which the ``influxdb`` and ``fluxgate_bin`` fixtures are
re-exported.

Tools installed from deploy/ci-requirements.txt (hadolint, yamllint,
kubernetes-validate) are required under CI (env CI set) and skipped with a
reason on a developer machine that lacks them.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
PY_TESTS = REPO_ROOT / "tests" / "python"

if str(PY_TESTS) not in sys.path:
    sys.path.insert(0, str(PY_TESTS))


def _load_python_suite_conftest():
    spec = importlib.util.spec_from_file_location("fluxgate_tests_python_conftest", PY_TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_py = _load_python_suite_conftest()

# Fixtures of tests/python, reused as they are.
influxdb = _py.influxdb
fluxgate_bin = _py.fluxgate_bin
running_in_ci = _py.running_in_ci


def require_tool(name: str) -> str:
    """Path of a command-line tool: the venv's bin/ first, then PATH.

    Missing: a failure under CI (deploy/ci-requirements.txt installs it),
    a skip elsewhere."""
    candidates = [Path(sys.executable).parent / name, Path(sys.prefix) / "bin" / name]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found (pip install -r deploy/ci-requirements.txt, as .ci/run does)"
    if running_in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_module(name: str):
    """Import a module from deploy/ci-requirements.txt (fail under CI, skip elsewhere)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"Python module {name} missing (pip install -r deploy/ci-requirements.txt)"
        if running_in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@functools.lru_cache(maxsize=None)
def fluxgate_help(binary: str, command: str) -> str:
    """`fluxgate <command> --help` (the long help, with [env: …] lines)."""
    out = subprocess.run(
        [binary, *command.split(), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
    )
    assert out.returncode == 0, f"fluxgate {command} --help failed: {out.stderr}"
    return out.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without FLUXGATE_* variables (a developer's shell must
    not change what a check sees), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXGATE_")}
    env.update(extra)
    return env


def check_config(binary: Path | str, config: Path, command: str, **env: str) -> subprocess.CompletedProcess:
    """Runs `fluxgate check-config --offline --config FILE --for COMMAND`:
    the files the configuration names live on the deployment's hosts, not
    here, so only the values are checked."""
    return subprocess.run(
        [str(binary), "check-config", "--offline", "--config", str(config), "--for", command],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(**env),
    )


def parse_duration(text: str) -> float:
    """Seconds in a fluxgate duration (`500ms`, `30s`, `5m`, `1h 30m`)."""
    import re

    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", text)
    assert parts, f"not a duration: {text!r}"
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


class Pki:
    """A throw-away CA (PyPI trustme) and one leaf certificate for the names
    the deploy files use plus loopback; the leaf allows server and client
    authentication, so it serves both ends of a mutual-TLS link."""

    NAMES = ("fluxgate", "fluxgate-authz", "localhost", "127.0.0.1")

    def __init__(self, directory: Path):
        trustme = require_module("trustme")
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        leaf = self.ca.issue_cert(*self.NAMES)
        self.ca_pem = self.ca.cert_pem.bytes()
        self.cert_pem = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        self.key_pem = leaf.private_key_pem.bytes()
        self.ca_path = directory / "ca.crt"
        self.cert_path = directory / "tls.crt"
        self.key_path = directory / "tls.key"
        self.ca_path.write_bytes(self.ca_pem)
        self.cert_path.write_bytes(self.cert_pem)
        self.key_path.write_bytes(self.key_pem)
        self.key_path.chmod(0o600)

    def pem_for(self, file_name: str) -> bytes:
        """What a credential or secret file of that name holds."""
        if file_name.endswith("ca.crt"):
            return self.ca_pem
        if file_name.endswith(".crt"):
            return self.cert_pem
        if file_name.endswith(".key"):
            return self.key_pem
        raise ValueError(file_name)

    def client_context(self):
        """An ssl context that trusts only this CA (Telegraf's tls_ca)."""
        import ssl

        return ssl.create_default_context(cafile=str(self.ca_path))


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))
