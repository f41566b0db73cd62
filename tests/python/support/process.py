"""Start, watch and stop one server process for a test.

Used for the real ``influxd`` (support.influxdb) and for the ``fluxgate``
binary (support.fluxgate). The rules every caller gets for free:

* stdout and stderr go to one log file; stdin is /dev/null;
* readiness is polled with a bounded deadline and a short interval; if the
  process exits or the deadline passes, ``ProcessError`` is raised with the
  tail of the process's log in its message;
* ``stop()`` signals only the PID this object started (SIGTERM, wait, then
  SIGKILL) — never a process found by name;
* on Linux the child gets SIGTERM if the Python process that started it dies
  (PR_SET_PDEATHSIG), and every process still running at interpreter exit
  is stopped, so a crashed or killed test run leaves no server behind.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

DEFAULT_POLL_INTERVAL = 0.02
LOG_TAIL_BYTES = 64 * 1024

# Requests to our own loopback servers must never go through a proxy from
# the environment (http_proxy & co.), whatever the machine has set.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ProcessError(RuntimeError):
    """A managed process failed to start, exited early or did not get ready."""


def _pdeathsig_preexec() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return preexec


_PREEXEC = _pdeathsig_preexec()
_LIVE: "set[ManagedProcess]" = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all_live() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        try:
            proc.stop(timeout=5)
        except Exception:  # pragma: no cover - best effort at exit
            pass


def http_request(
    url: str,
    *,
    method: str = "GET",
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request with no proxy; returns (status, headers, body) for
    every status, including 4xx/5xx. Raises OSError on connection errors."""
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with _NO_PROXY_OPENER.open(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as err:
        try:
            body = err.read() if err.fp is not None else b""
        finally:
            err.close()
        return err.code, dict(err.headers.items()), body


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ManagedProcess:
    """One child process with a log file.

    ``argv``: the command; ``name``: used in messages and the log file name;
    ``log_path``: where stdout+stderr go (default: a new temp file, removed
    by ``stop()``); ``env``: the full environment (default: inherit);
    ``cwd``: working directory.

    Start it with ``start()`` (or use it as a context manager), then wait
    with ``wait_for_port`` / ``wait_for_http`` / ``wait_until``.
    """

    def __init__(
        self,
        argv: Sequence[str | os.PathLike],
        *,
        name: str | None = None,
        log_path: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> None:
        self.argv = [os.fspath(a) for a in argv]
        self.name = name or Path(self.argv[0]).name
        self.env = dict(env) if env is not None else None
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path is not None else None
        self._log_file = None
        self.popen: subprocess.Popen | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> "ManagedProcess":
        if self.popen is not None:
            raise ProcessError(f"{self.name}: already started (pid {self.popen.pid})")
        if self.log_path is None:
            fd, path = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(path)
        self._log_file = open(self.log_path, "ab", buffering=0)
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                close_fds=True,
                preexec_fn=_PREEXEC,
            )
        except OSError as err:
            self._close_log()
            raise ProcessError(f"{self.name}: cannot start {self.argv!r}: {err}") from err
        with _LIVE_LOCK:
            _LIVE.add(self)
        return self

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise ProcessError(f"{self.name}: not started")
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM this object's PID, wait up to ``timeout`` s, then SIGKILL.
        Returns the exit code (None if never started). Idempotent."""
        code = None
        if self.popen is not None:
            if self.popen.poll() is None:
                try:
                    self.popen.send_signal(signal.SIGTERM)
                    code = self.popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    code = self.popen.wait(timeout=timeout)
            else:
                code = self.popen.returncode
        with _LIVE_LOCK:
            _LIVE.discard(self)
        self._close_log()
        if self._own_log and self.log_path is not None and self.popen is not None:
            try:
                self.log_path.unlink()
            except FileNotFoundError:
                pass
        return code

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "ManagedProcess":
        if self.popen is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- logs and errors -----------------------------------------------------

    def log_text(self, max_bytes: int = LOG_TAIL_BYTES) -> str:
        """The last ``max_bytes`` of the process's log (stdout+stderr)."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - max_bytes))
                data = f.read()
        except FileNotFoundError:
            return ""
        text = data.decode("utf-8", "replace")
        return text if size <= max_bytes else "[...]\n" + text

    def error(self, message: str) -> ProcessError:
        """A ProcessError carrying ``message``, the command and the log tail."""
        state = "running" if self.is_running() else f"exit code {self.returncode}"
        return ProcessError(
            f"{self.name} (pid {self.popen.pid if self.popen else '-'}, {state}): {message}\n"
            f"command: {' '.join(self.argv)}\n"
            f"----- log {self.log_path} -----\n{self.log_text()}\n----- end of log -----"
        )

    # -- readiness -----------------------------------------------------------

    def wait_until(
        self,
        check: Callable[[], object],
        *,
        timeout: float,
        what: str,
        interval: float = DEFAULT_POLL_INTERVAL,
    ) -> object:
        """Poll ``check()`` until it returns a truthy value (returned).

        Exceptions from ``check`` count as "not yet" (the last one is shown
        if the deadline passes). Raises ProcessError, with the log, if the
        process exits or ``timeout`` seconds pass first.
        """
        if self.popen is None:
            raise ProcessError(f"{self.name}: not started")
        deadline = time.monotonic() + timeout
        last_exc: BaseException | None = None
        while True:
            if self.popen.poll() is not None:
                raise self.error(f"exited while waiting for {what}")
            try:
                result = check()
            except Exception as exc:  # not ready yet
                last_exc = exc
                result = None
            if result:
                return result
            if time.monotonic() >= deadline:
                detail = f" (last error: {last_exc!r})" if last_exc else ""
                raise self.error(f"not ready after {timeout:.1f}s waiting for {what}{detail}")
            time.sleep(interval)

    def wait_for_port(self, port: int, host: str = "127.0.0.1", *, timeout: float = 20.0) -> None:
        """Wait until a TCP connection to host:port succeeds."""
        self.wait_until(
            lambda: port_is_open(host, port, timeout=0.5),
            timeout=timeout,
            what=f"TCP {host}:{port}",
        )

    def wait_for_http(
        self,
        url: str,
        *,
        statuses: Iterable[int] = (200, 204),
        timeout: float = 20.0,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """Wait until ``GET url`` answers with one of ``statuses``; returns it."""
        wanted = set(statuses)

        def check() -> int:
            status, _, body = http_request(url, headers=headers, timeout=1.0)
            if status not in wanted:
                raise ProcessError(f"HTTP {status}: {body[:200]!r}")
            return status

        return int(self.wait_until(check, timeout=timeout, what=f"GET {url} -> {sorted(wanted)}"))


# -- sockets of a process -----------------------------------------------------


def _proc_socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # fd closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _decode_proc_addr(hexaddr: str) -> tuple[str, int]:
    """Decode /proc/net/{tcp,udp}[6] ``ADDR:PORT`` (each 32-bit word of the
    address is printed as a host-order integer)."""
    import struct

    ip_hex, port_hex = hexaddr.split(":")
    packed = b"".join(
        struct.pack("=I", int(ip_hex[i:i + 8], 16)) for i in range(0, len(ip_hex), 8)
    )
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, packed), int(port_hex, 16)


def listening_sockets(pid: int) -> list[tuple[str, str, int]]:
    """Sockets process ``pid`` accepts traffic on, read from /proc (Linux).

    Returns ``(proto, address, port)`` for each listening TCP socket and each
    bound UDP socket (proto ``tcp``/``tcp6``/``udp``/``udp6``), plus
    ``("unix", path, 0)`` for listening unix sockets.
    """
    inodes = _proc_socket_inodes(pid)
    found: list[tuple[str, str, int]] = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], int(cols[9])
            if inode not in inodes:
                continue
            if proto.startswith("tcp") and state != "0A":  # 0A = LISTEN
                continue
            addr, port = _decode_proc_addr(local)
            found.append((proto, addr, port))
    try:
        lines = Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]
    except FileNotFoundError:
        lines = []
    for line in lines:
        cols = line.split()
        flags, inode = int(cols[3], 16), int(cols[6])
        if inode in inodes and flags & 0x10000:  # __SO_ACCEPTCON: listening
            found.append(("unix", cols[7] if len(cols) > 7 else "", 0))
    return found
