"""deploy/systemd: the units and their configuration files.

* the units are parsed (systemd's syntax: repeated keys, backslash
  continuations) and must carry the hardening settings, credentials for
  every %d/ path, a stop timeout longer than fluxgate's shutdown grace;
* every flag of ExecStart is one `fluxgate <command> --help` knows, and the
  /etc/fluxgate/*.toml it names passes `fluxgate check-config`;
* `systemd-analyze verify` accepts them and `systemd-analyze security
  --offline=true` rates them (skipped when systemd-analyze is missing);
* ExecStart runs for real: the command line with systemd's specifiers
  (%S, %d) resolved to temporary directories and the listen ports moved to
  free ones; /healthz and /readyz answer, and SIGTERM ends it with exit 0;
* the drop-ins (fluxgate-authz.service.d/postgres.conf): their variables
  are real options, their credentials match, and two token-service
  replicas run with it over a real PostgreSQL, a proxy listing both and
  staying ready when one stops.
"""

from __future__ import annotations

import http.client
import re
import shlex
import shutil
import signal
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import DEPLOY, Pki, check_config, clean_env, fluxgate_help, parse_duration
from support.ports import LOOPBACK, free_ports
from support.process import ManagedProcess

SYSTEMD = DEPLOY / "systemd"
UNITS = sorted(SYSTEMD.glob("*.service"))
DROPINS = sorted(SYSTEMD.glob("*.service.d/*.conf"))
BINARY = "/usr/local/bin/fluxgate"
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 = fully sandboxed, 10 = not at all

REQUIRED = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "UMask": "0077",
    "Restart": "on-failure",
    "KillSignal": "SIGTERM",
}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(path: Path) -> dict[str, list[str]]:
    return parse_unit(path.read_text())["Service"]


def one(settings: dict[str, list[str]], key: str) -> str:
    values = settings.get(key)
    assert values, f"{key}= is not set"
    return values[-1]


def exec_start(path: Path) -> list[str]:
    return shlex.split(one(service(path), "ExecStart"))


def command_of(path: Path) -> str:
    return path.stem.removeprefix("fluxgate-")


def config_of(argv: list[str]) -> Path:
    assert "--config" in argv, "ExecStart has no --config"
    etc = Path(argv[argv.index("--config") + 1])
    assert etc.parent == Path("/etc/fluxgate"), etc
    return SYSTEMD / etc.name


def test_units_exist_for_serve_proxy_and_authz():
    assert {command_of(p) for p in UNITS} == {"serve", "proxy", "authz"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_is_hardened(unit):
    settings = service(unit)
    for key, value in REQUIRED.items():
        assert one(settings, key) == value, f"{key}={value} expected"
    dynamic = settings.get("DynamicUser", ["no"])[-1] == "yes"
    user = settings.get("User", [""])[-1]
    assert dynamic or (user and user not in ("root", "0")), "DynamicUser=yes or a dedicated User="
    families = " ".join(settings["RestrictAddressFamilies"]).split()
    assert set(families) <= {"AF_INET", "AF_INET6", "AF_UNIX"}, families
    filters = settings["SystemCallFilter"]
    assert filters[0] == "@system-service" and any(f.startswith("~") for f in filters[1:])
    assert one(parse_unit(unit.read_text())["Install"], "WantedBy") == "multi-user.target"


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_credentials_and_state_match_the_command_line(unit):
    settings = service(unit)
    argv = exec_start(unit)
    credentials = {c.split(":", 1)[0]: c.split(":", 1)[1] for c in settings.get("LoadCredential", [])}
    used = {m.group(1) for arg in argv for m in [re.fullmatch(r"%d/([\w.-]+)", arg)] if m}
    assert used == set(credentials), f"ExecStart uses credentials {used}, LoadCredential= gives {set(credentials)}"
    for source in credentials.values():
        assert source.startswith("/etc/fluxgate/"), source
    if "--data-dir" in argv:
        state = one(settings, "StateDirectory")
        assert argv[argv.index("--data-dir") + 1] == f"%S/{state}", "the data dir is the StateDirectory"
        assert one(settings, "StateDirectoryMode") == "0700"
    else:
        assert "StateDirectory" not in settings, "a stateless command with a state directory"


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_exec_start_flags_exist_and_the_config_is_valid(unit, fluxgate_bin):
    argv = exec_start(unit)
    assert argv[0] == BINARY
    command = command_of(unit)
    assert argv[1] == command
    help_text = fluxgate_help(str(fluxgate_bin), command)
    for arg in argv[2:]:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            assert re.search(rf"^\s+{re.escape(flag)}\b", help_text, re.M), f"fluxgate {command} has no {flag}"
    config = config_of(argv)
    out = check_config(fluxgate_bin, config, command)
    assert out.returncode == 0, f"{config.name}: {out.stderr}{out.stdout}"


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_files_it_writes_are_in_its_own_directories(unit):
    """ProtectSystem=strict leaves only StateDirectory= and LogsDirectory=
    writable: the audit log must be in one of them."""
    settings = service(unit)
    config = tomllib.loads(config_of(exec_start(unit)).read_text())
    writable = [f"/var/lib/{d}/" for d in settings.get("StateDirectory", [])]
    writable += [f"/var/log/{d}/" for d in settings.get("LogsDirectory", [])]
    audit = config.get("audit-log", "off")
    if audit not in ("off", "stdout", "-", ""):
        assert any(audit.startswith(w) for w in writable), f"audit-log {audit} is read-only under ProtectSystem=strict"
    assert "data-dir" not in config, "the data dir comes from the unit (--data-dir %S/...)"


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_stop_timeout_outlasts_the_shutdown_grace(unit):
    settings = service(unit)
    config = tomllib.loads(config_of(exec_start(unit)).read_text())
    grace = parse_duration(config.get("shutdown-grace", "30s"))
    assert parse_duration(one(settings, "TimeoutStopSec")) > grace


def with_binary(units: list[Path], binary: Path, into: Path) -> list[Path]:
    """Copies of the units whose ExecStart runs ``binary`` (verify checks it exists)."""
    copies = []
    for unit in units:
        copy = into / unit.name
        copy.write_text(unit.read_text().replace(BINARY, str(binary)))
        # Its drop-ins, where systemd looks for them.
        dropins = SYSTEMD / f"{unit.name}.d"
        if dropins.is_dir():
            shutil.copytree(dropins, into / dropins.name)
        copies.append(copy)
    return copies


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    return tool


def test_systemd_analyze_verify(fluxgate_bin, tmp_path):
    tool = systemd_analyze()
    copies = with_binary(UNITS, fluxgate_bin, tmp_path)
    out = subprocess.run([tool, "verify", "--man=no", *map(str, copies)],
                         capture_output=True, text=True, timeout=60, env=clean_env(SYSTEMD_LOG_COLOR="0"))
    complaints = [line for line in (out.stdout + out.stderr).splitlines()
                  if any(c.name in line for c in copies)]
    assert out.returncode == 0 and not complaints, f"systemd-analyze verify:\n{out.stdout}{out.stderr}"


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_security_exposure(unit, fluxgate_bin, tmp_path):
    tool = systemd_analyze()
    copy, = with_binary([unit], fluxgate_bin, tmp_path)
    out = subprocess.run([tool, "security", "--offline=true", "--no-pager", str(copy)],
                         capture_output=True, text=True, timeout=60, env=clean_env(SYSTEMD_COLORS="0"))
    if "--offline" in out.stderr and "unrecognized" in out.stderr:
        pytest.skip("systemd-analyze too old for security --offline (systemd < 250)")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout + out.stderr)
    assert m, f"no exposure level in:\n{out.stdout}{out.stderr}"
    assert float(m.group(1)) <= MAX_EXPOSURE, f"exposure {m.group(1)} > {MAX_EXPOSURE}:\n{out.stdout}"


# -- ExecStart, for real ----------------------------------------------------------------


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def dropin_environment(dropin: Path) -> dict[str, str]:
    """The variables a drop-in's Environment= lines set."""
    env = {}
    for value in service(dropin).get("Environment", []):
        for item in shlex.split(value):
            name, sep, setting = item.partition("=")
            assert sep, f"not NAME=VALUE: {item}"
            env[name] = setting
    return env


class UnitRun:
    """A unit's ExecStart with %S/%d resolved to ``root`` and ports moved;
    with ``dropins``, their credentials and variables too (``secrets``:
    the content of credentials that are not certificates)."""

    def __init__(self, unit: Path, binary: Path, root: Path, overrides: dict[str, str], pki: Pki,
                 dropins: tuple[Path, ...] = (), secrets: dict[str, str] | None = None,
                 env: dict[str, str] | None = None):
        self.root = root
        (root / "state").mkdir(parents=True)
        (root / "credentials").mkdir()
        config = tomllib.loads(config_of(exec_start(unit)).read_text())
        settings = service(unit)
        # The unit's log directory (/var/log/<LogsDirectory>) under root.
        for key, value in list(config.items()):
            for logs in settings.get("LogsDirectory", []):
                prefix = f"/var/log/{logs}/"
                if isinstance(value, str) and value.startswith(prefix):
                    (root / "logs" / logs).mkdir(parents=True, exist_ok=True)
                    config[key] = str(root / "logs" / logs / value[len(prefix):])
        config.update(overrides)
        self.config = config
        config_path = root / "fluxgate.toml"
        config_path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in config.items()))

        argv = exec_start(unit)
        argv[argv.index("--config") + 1] = str(config_path)
        resolved = []
        for arg in argv:
            arg = arg.replace("%S", str(root / "state")).replace("%d", str(root / "credentials"))
            assert "%" not in arg, f"specifier left in {arg}"
            resolved.append(arg)
        resolved[0] = str(binary)
        loaded = list(service(unit).get("LoadCredential", []))
        variables = {}
        for dropin in dropins:
            loaded += service(dropin).get("LoadCredential", [])
            for name, value in dropin_environment(dropin).items():
                variables[name] = value.replace("%d", str(root / "credentials"))
        variables.update(env or {})
        for setting in loaded:
            name = setting.split(":", 1)[0]
            credential = root / "credentials" / name
            if name.endswith((".crt", ".key")):
                credential.write_bytes(pki.pem_for(name))
            else:
                credential.write_text((secrets or {}).get(name, "credential-for-the-test") + "\n")
            credential.chmod(0o400)  # as systemd leaves them
        if "StateDirectory" in settings:
            (root / "state" / one(settings, "StateDirectory")).mkdir(mode=0o700)
        self.stop_timeout = parse_duration(one(settings, "TimeoutStopSec"))
        self.process = ManagedProcess(resolved, name=unit.stem, env=clean_env(RUST_LOG="info", **variables))

    @property
    def admin(self) -> str:
        return f"http://{self.config['admin-listen']}"

    def start(self) -> "UnitRun":
        self.process.start()
        self.process.wait_for_http(f"{self.admin}/healthz", statuses=(200,), timeout=20)
        return self

    def sigterm(self) -> int:
        self.process.popen.send_signal(signal.SIGTERM)
        code = self.process.popen.wait(timeout=self.stop_timeout)
        self.process.stop()
        return code


def unit(command: str) -> Path:
    return SYSTEMD / f"fluxgate-{command}.service"


def https_status(port: int, pki: Pki, path: str = "/health", method: str = "GET") -> int:
    """Status of a request over TLS, verifying the certificate like a client
    with tls_ca = the test CA would."""
    conn = http.client.HTTPSConnection(LOOPBACK, port, context=pki.client_context(), timeout=10)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        return conn.getresponse().status
    finally:
        conn.close()


def test_serve_unit_command_line_runs(fluxgate_bin, tmp_path, pki):
    listen, authz, admin = free_ports(3)
    run = UnitRun(unit("serve"), fluxgate_bin, tmp_path, {
        "listen": f"{LOOPBACK}:{listen}",
        "authz-listen": f"{LOOPBACK}:{authz}",
        "admin-listen": f"{LOOPBACK}:{admin}",
        "shutdown-grace": "2s",
    }, pki)
    try:
        run.start()
        run.process.wait_for_http(f"{run.admin}/readyz", statuses=(200,), timeout=20)
        # The proxy port speaks TLS with the tls.crt credential; a write with
        # no token is refused (401) and audited to the LogsDirectory file.
        assert https_status(listen, pki, "/write?db=telegraf", method="POST") == 401
        audit = Path(run.config["audit-log"])
        run.process.wait_until(lambda: audit.is_file() and audit.read_text().strip(), timeout=10,
                               what="an audit line")
        token = tmp_path / "state" / "fluxgate" / "bootstrap-management-token"
        assert token.is_file() and (token.stat().st_mode & 0o077) == 0
        assert (tmp_path / "state" / "fluxgate" / "fluxgate.db").is_file()
        assert run.sigterm() == 0
    finally:
        run.process.stop()


def test_authz_and_proxy_units_command_lines_run_together(fluxgate_bin, tmp_path, pki):
    """The proxy unit's mutual-TLS flags against the authz unit's: the proxy
    gets ready only once its client certificate is accepted and the change
    stream runs over TLS."""
    authz_port, authz_admin, listen, proxy_admin = free_ports(4)
    authz = UnitRun(unit("authz"), fluxgate_bin, tmp_path / "authz", {
        "listen": f"{LOOPBACK}:{authz_port}",
        "admin-listen": f"{LOOPBACK}:{authz_admin}",
        "shutdown-grace": "2s",
    }, pki)
    proxy = UnitRun(unit("proxy"), fluxgate_bin, tmp_path / "proxy", {
        "listen": f"{LOOPBACK}:{listen}",
        "admin-listen": f"{LOOPBACK}:{proxy_admin}",
        "authz": f"https://localhost:{authz_port}",
        "shutdown-grace": "2s",
    }, pki)
    try:
        authz.start()
        authz.process.wait_for_http(f"{authz.admin}/readyz", statuses=(200,), timeout=20)
        assert (tmp_path / "authz" / "state" / "fluxgate" / "bootstrap-management-token").is_file()
        proxy.start()
        # Ready = the token service answers and the change stream is connected.
        proxy.process.wait_for_http(f"{proxy.admin}/readyz", statuses=(200,), timeout=20)
        assert https_status(listen, pki) >= 200
        assert proxy.sigterm() == 0
        assert authz.sigterm() == 0
    finally:
        proxy.process.stop()
        authz.process.stop()


# -- the PostgreSQL drop-in ----------------------------------------------------------------


@pytest.mark.parametrize("dropin", DROPINS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_dropin_variables_are_options_and_its_credentials_match(dropin, fluxgate_bin):
    unit = SYSTEMD / dropin.parent.name.removesuffix(".d")
    assert unit in UNITS, f"{dropin} extends no unit of deploy/systemd"
    help_text = fluxgate_help(str(fluxgate_bin), command_of(unit))
    env = dropin_environment(dropin)
    assert env, "a drop-in without Environment="
    for name in env:
        assert f"[env: {name}=" in help_text, f"fluxgate {command_of(unit)} has no {name}"
    credentials = {c.split(":", 1)[0]: c.split(":", 1)[1] for c in service(dropin).get("LoadCredential", [])}
    used = {m for value in env.values() for m in re.findall(r"%d/([\w.-]+)", value)}
    assert used == set(credentials), f"variables use {used}, LoadCredential= gives {set(credentials)}"
    for source in credentials.values():
        assert source.startswith("/etc/fluxgate/"), source
    store = urlsplit(env["FLUXGATE_STORE"])
    assert store.scheme == "postgres" and not store.password, "the password comes from a credential"
    assert parse_qs(store.query)["sslmode"] == ["verify-full"]


def test_authz_replicas_over_postgres_with_the_dropin_and_a_proxy_listing_both(fluxgate_bin, tmp_path, pki, postgres):
    """Two token-service replicas (the authz unit plus postgres.conf) over a
    real PostgreSQL with TLS verify-full; exactly one writes the bootstrap
    token; a proxy unit lists both and stays ready when one stops."""
    dropin = SYSTEMD / "fluxgate-authz.service.d" / "postgres.conf"
    store = urlsplit(dropin_environment(dropin)["FLUXGATE_STORE"])
    postgres.sql("postgres", "CREATE DATABASE fluxgate_systemd")
    replicas = []
    ports = free_ports(6)
    for i, name in enumerate(["authz-1", "authz-2"]):
        credentials = tmp_path / name / "credentials"
        url = store._replace(netloc=f"{store.username}@localhost:{postgres.port}", path="/fluxgate_systemd")
        replicas.append(UnitRun(unit("authz"), fluxgate_bin, tmp_path / name, {
            "listen": f"{LOOPBACK}:{ports[2 * i]}",
            "admin-listen": f"{LOOPBACK}:{ports[2 * i + 1]}",
            "shutdown-grace": "2s",
        }, pki, dropins=(dropin,), secrets={"store-password": postgres.password},
            env={"FLUXGATE_STORE": url.geturl().replace("%d", str(credentials))}))
    proxy = UnitRun(unit("proxy"), fluxgate_bin, tmp_path / "proxy", {
        "listen": f"{LOOPBACK}:{ports[4]}",
        "admin-listen": f"{LOOPBACK}:{ports[5]}",
        "authz": f"https://localhost:{ports[0]},https://localhost:{ports[2]}",
        "shutdown-grace": "2s",
    }, pki)
    try:
        for r in replicas:
            r.start()
        for r in replicas:
            r.process.wait_for_http(f"{r.admin}/readyz", statuses=(200,), timeout=30)
        written = [r for r in replicas
                   if (r.root / "state" / "fluxgate" / "bootstrap-management-token").is_file()]
        assert len(written) == 1, "one bootstrap token for the shared store"
        assert postgres.sql("fluxgate_systemd", "SELECT count(*) FROM tokens").stdout.strip() == "1"
        proxy.start()
        proxy.process.wait_for_http(f"{proxy.admin}/readyz", statuses=(200,), timeout=20)
        assert replicas[0].sigterm() == 0
        # The proxy moves to the other replica and stays (or is soon again) ready.
        proxy.process.wait_for_http(f"{proxy.admin}/readyz", statuses=(200,), timeout=20)
        assert https_status(ports[4], pki) >= 200
        assert proxy.sigterm() == 0
        assert replicas[1].sigterm() == 0
        for r in replicas:
            assert postgres.password not in r.process.log_text()
    finally:
        proxy.process.stop()
        for r in replicas:
            r.process.stop()
