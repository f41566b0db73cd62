"""Database administration through fluxgate, end to end: ``fluxgate
database …`` (the CLI) with a management token → ``fluxgate serve`` → a real
InfluxDB 1.x. Database tokens read and write but never administer;
management tokens administer but never read or write; the audit trail names
the management token of every admin action.
"""

from __future__ import annotations

import json
import os
import time
import subprocess
import uuid

import pytest
import requests
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError

from support.fluxgate import FluxgateServe
from support.ports import LOOPBACK


@pytest.fixture
def serve(influxdb, fluxgate_bin, tmp_path):
    audit = tmp_path / "audit.jsonl"
    with FluxgateServe(fluxgate_bin, tmp_path / "data", influxdb.url,
                       extra_args=["--audit-log", str(audit)]) as s:
        s.audit = audit
        yield s


def cli(fluxgate_bin, serve: FluxgateServe, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXGATE_")}
    env["FLUXGATE_TOKEN_FILE"] = str(serve.data_dir / "bootstrap-management-token")
    env["FLUXGATE_HOST"] = serve.url
    return subprocess.run([str(fluxgate_bin), "database", *args], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def client(serve: FluxgateServe, token: str, database: str) -> InfluxDBClient:
    return InfluxDBClient(host=LOOPBACK, port=serve.port, username="x", password=token,
                          database=database, timeout=30)


def databases(influxdb) -> list[str]:
    """The databases influxd has, asked directly with its admin access."""
    series = influxdb.query("SHOW DATABASES")["results"][0].get("series", [{}])[0]
    return [row[0] for row in series.get("values", [])]


def default_duration(influxdb, name: str) -> str:
    policies = influxdb.query(f'SHOW RETENTION POLICIES ON "{name}"')["results"][0]["series"][0]
    columns = policies["columns"]
    default = next(row for row in policies["values"] if row[columns.index("default")])
    return default[columns.index("duration")]


def query(serve: FluxgateServe, token: str, q: str, db: str | None = None) -> requests.Response:
    params = {"q": q, **({"db": db} if db else {})}
    return requests.post(f"{serve.url}/query", params=params,
                         headers={"Authorization": f"Token {token}"}, timeout=30)


def test_management_tokens_administer_and_database_tokens_use(serve, influxdb, fluxgate_bin):
    name = f"admin_{uuid.uuid4().hex[:8]}"

    # The CLI creates the database through the proxy, with the management token.
    created = cli(fluxgate_bin, serve, "create", "--retention-period", "30d", name)
    assert created.returncode == 0, created.stderr
    assert name in databases(influxdb)
    assert default_duration(influxdb, name) == "720h0m0s"

    # A database token writes and reads it.
    _, token = serve.create_token(read=[name], write=[name])
    db_client = client(serve, token, name)
    db_client.write_points([{"measurement": "cpu", "fields": {"v": 1.0}, "time": time.time_ns()}])
    assert len(list(db_client.query("SELECT * FROM cpu").get_points())) == 1

    # Its admin statements are refused, InfluxDB-shaped, and nothing happens.
    for statement in (f'CREATE DATABASE "{name}_2"', f'DROP DATABASE "{name}"', "DROP MEASUREMENT cpu"):
        r = query(serve, token, statement, db=name)
        assert r.status_code == 403, (statement, r.text)
        assert "error" in r.json()
    assert len(list(db_client.query("SELECT * FROM cpu").get_points())) == 1
    assert f"{name}_2" not in databases(influxdb)

    # The management token reads and writes nothing.
    management = serve.management_token
    r = query(serve, management, "SELECT * FROM cpu", db=name)
    assert r.status_code == 403, r.text
    r = requests.post(f"{serve.url}/write", params={"db": name}, data="cpu v=2",
                      headers={"Authorization": f"Token {management}"}, timeout=30)
    assert r.status_code == 403, r.text
    with pytest.raises(InfluxDBClientError) as e:
        client(serve, management, name).query("SELECT * FROM cpu")
    assert e.value.code == 403

    # Listing shows it (JSON for scripts, a table for people).
    listed = cli(fluxgate_bin, serve, "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    entries = {d["name"]: d for d in json.loads(listed.stdout)}
    assert entries[name]["retention_period"] == "30d"
    table = cli(fluxgate_bin, serve, "list")
    assert name in table.stdout and "RETENTION" in table.stdout
    # A database token sees only its own databases.
    visible = [p["name"] for p in db_client.query("SHOW DATABASES").get_points()]
    assert visible == [name]

    # Update the retention period.
    updated = cli(fluxgate_bin, serve, "update", "--retention-period", "1w", name)
    assert updated.returncode == 0, updated.stderr
    assert default_duration(influxdb, name) == "168h0m0s"

    # Delete: refused without a terminal unless --force; then gone.
    refused = cli(fluxgate_bin, serve, "delete", name)
    assert refused.returncode == 2, refused.stderr
    deleted = cli(fluxgate_bin, serve, "delete", "--force", name)
    assert deleted.returncode == 0, deleted.stderr
    assert name not in databases(influxdb)

    # The audit trail has each admin action with the management token's id.
    events = [json.loads(line) for line in serve.audit.read_text().splitlines()]
    admin = [e for e in events if set(e["actions"]) & {"create", "delete"} and e["decision"] == "allow"]
    actions = {(e["databases"][0], tuple(e["actions"])) for e in admin}
    assert (name, ("create",)) in actions
    assert (name, ("delete",)) in actions
    assert len({e["token_id"] for e in admin}) == 1 and admin[0]["token_id"]
    denied = [e for e in events if e["decision"] == "deny" and "create" in e["actions"]]
    assert denied, "the database token's CREATE DATABASE is audited as denied"


def test_cli_errors_are_one_line_with_exit_codes(serve, fluxgate_bin, tmp_path):
    bad = tmp_path / "bad-token"
    bad.write_text("not-a-token\n")
    bad.chmod(0o600)  # a secret file others can read draws a warning line
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXGATE_")}
    env["FLUXGATE_TOKEN_FILE"] = str(bad)
    r = subprocess.run([str(fluxgate_bin), "database", "create", "--host", serve.url, "x"],
                       env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 3, r.stderr
    assert r.stderr.count("\n") == 1 and "not-a-token" not in r.stderr
    r = cli(fluxgate_bin, serve, "create", "--max-tables", "10", "x")
    assert r.returncode == 2 and "Cloud Dedicated" in r.stderr
    r = cli(fluxgate_bin, serve, "create", "--retention-period", "30 days", "x")
    assert r.returncode == 2
    env["FLUXGATE_TOKEN_FILE"] = str(serve.data_dir / "bootstrap-management-token")
    r = subprocess.run([str(fluxgate_bin), "database", "list", "--host", f"http://{LOOPBACK}:9"],
                       env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 5, r.stderr
