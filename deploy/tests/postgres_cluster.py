"""A throwaway PostgreSQL cluster for the deploy checks, as the Rust tests
make one (tests/common/postgres.rs): ``initdb`` in a temporary directory (as
``nobody`` when running as root, as CI does: PostgreSQL refuses root), TCP
on a free 127.0.0.1 port only, SCRAM password authentication for the user
``fluxgate``, optionally TLS with a given certificate. Stopped by PID
(SIGINT, fast shutdown); a bash watchdog also stops it if this process dies.

The binaries come from ``FLUXGATE_PG_BIN``, else the newest
``/usr/lib/postgresql/*/bin`` (Debian's ``postgresql``, installed by .ci/run).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "fluxgate"

WATCHDOG = r"""
"$PG_BIN/postgres" -D "$PG_DATA" "$@" >>"$PG_LOG" 2>&1 &
pg=$!
while [ -d "/proc/$PG_PARENT" ] && kill -0 "$pg" 2>/dev/null; do sleep 0.2; done
kill -INT "$pg" 2>/dev/null
wait "$pg"
"""


def bin_dir() -> Path:
    if os.environ.get("FLUXGATE_PG_BIN"):
        return Path(os.environ["FLUXGATE_PG_BIN"])
    found = sorted(
        (int(p.parent.name), p.parent)
        for p in Path("/usr/lib/postgresql").glob("*/bin")
        if p.parent.name.isdigit() and (p / "initdb").is_file()
    )
    if not found:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run .ci/run")
    return found[-1][1] / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    def __init__(self, tls: tuple[bytes, bytes] | None = None):
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="fluxgate-pg-"))
        self.port = _free_port()
        self.password = "pw" + secrets.token_hex(12)
        self.pid: int | None = None
        self.owner = None
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self.owner = (nobody.pw_uid, nobody.pw_gid)
        (self.root / "pwfile").write_text(self.password + "\n")
        self._chown(self.root)
        run = dict(cwd=self.root, env={**os.environ, "LC_ALL": "C"}, capture_output=True, text=True)
        if self.owner:
            run.update(user=self.owner[0], group=self.owner[1], extra_groups=[])
        out = subprocess.run(
            [str(self.bin / "initdb"), "-D", "data", "-U", USER, "--pwfile=pwfile", "--auth=scram-sha-256",
             "--encoding=UTF8", "--locale=C", "--no-instructions"],
            timeout=120, **run,
        )
        assert out.returncode == 0, f"initdb failed: {out.stderr}"
        self.settings = ["listen_addresses=127.0.0.1", "unix_socket_directories=", f"port={self.port}"]
        if tls:
            cert, key = tls
            data = self.root / "data"
            (data / "server.crt").write_bytes(cert)
            (data / "server.key").write_bytes(key)
            (data / "server.key").chmod(0o600)
            self._chown(data)
            self.settings += ["ssl=on", "ssl_cert_file=server.crt", "ssl_key_file=server.key"]
        self._run()

    def _chown(self, path: Path) -> None:
        if not self.owner:
            return
        os.chown(path, *self.owner)
        for p in path.rglob("*"):
            os.chown(p, *self.owner)

    def _run(self) -> None:
        args = ["bash", "-c", WATCHDOG, "watchdog"]
        for setting in self.settings:
            args += ["-c", setting]
        env = {**os.environ, "PG_BIN": str(self.bin), "PG_DATA": str(self.root / "data"),
               "PG_LOG": str(self.root / "postgres.log"), "PG_PARENT": str(os.getpid()), "LC_ALL": "C"}
        extra = dict(user=self.owner[0], group=self.owner[1], extra_groups=[]) if self.owner else {}
        subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, **extra)
        deadline = time.monotonic() + 60
        pid_file = self.root / "data" / "postmaster.pid"
        while time.monotonic() < deadline:
            if pid_file.exists() and self.sql("postgres", "SELECT 1", check=False).returncode == 0:
                self.pid = int(pid_file.read_text().split()[0])
                return
            time.sleep(0.05)
        raise AssertionError(f"PostgreSQL did not start:\n{self.log()}")

    def log(self) -> str:
        path = self.root / "postgres.log"
        return path.read_text() if path.exists() else ""

    def sql(self, database: str, statement: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-t", "-A", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", USER, "-d", database, "-c", statement],
            env={**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "2"},
            capture_output=True, text=True, timeout=30,
        )
        if check:
            assert out.returncode == 0, f"{statement}: {out.stderr}"
        return out

    def stop(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        shutil.rmtree(self.root, ignore_errors=True)
