"""deploy/telegraf/*.conf parsed as TOML (Telegraf's format) and checked for
what a Telegraf user needs: one fluxgate output over https, the token taken
from a secret store defined in the same file (never written in it), gzip,
a CA for fluxgate's certificate, `skip_database_creation` for the v1 output;
and the names they use (host, organization, bucket) match the Kubernetes
example.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import DEPLOY

TELEGRAF = DEPLOY / "telegraf"
CONFS = sorted(TELEGRAF.glob("*.conf"))
SECRET_REF = re.compile(r"^@\{(\w+):(\w+)\}$")

# Options of the Telegraf plugins (from their sample.conf); a key outside
# these sets is a typo Telegraf would reject at start-up.
KNOWN = {
    "influxdb_v2": {
        "urls", "local_address", "token", "organization", "bucket", "bucket_tag", "exclude_bucket_tag",
        "timeout", "http_headers", "http_proxy", "user_agent", "content_encoding", "influx_uint_support",
        "influx_omit_timestamp", "tls_ca", "tls_cert", "tls_key", "tls_key_pwd", "tls_server_name",
        "insecure_skip_verify", "ping_timeout", "read_idle_timeout", "concurrent_writes", "rate_limit",
        "rate_limit_period", "alias", "namepass", "namedrop", "fieldpass", "fielddrop", "tagpass", "tagdrop",
        "metric_batch_size", "metric_buffer_limit", "flush_interval", "flush_jitter",
    },
    "influxdb": {
        "urls", "local_address", "database", "database_tag", "exclude_database_tag", "skip_database_creation",
        "retention_policy", "retention_policy_tag", "exclude_retention_policy_tag", "write_consistency",
        "timeout", "username", "password", "user_agent", "udp_payload", "tls_ca", "tls_cert", "tls_key",
        "tls_server_name", "insecure_skip_verify", "http_proxy", "http_headers", "content_encoding",
        "influx_uint_support", "influx_omit_timestamp", "alias", "namepass", "namedrop", "fieldpass",
        "fielddrop", "tagpass", "tagdrop", "metric_batch_size", "metric_buffer_limit", "flush_interval",
        "flush_jitter",
    },
}
STORE_KEYS = {"os": {"id", "keyring", "collection", "dynamic"}, "docker": {"id", "path", "dynamic"},
              "systemd": {"id", "path", "prefix"}, "jose": {"id", "path", "password"}}
CREDENTIAL = {"influxdb_v2": "token", "influxdb": "password"}


def load(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def the_output(conf: dict) -> tuple[str, dict]:
    outputs = conf.get("outputs", {})
    assert len(outputs) == 1, f"expected one output plugin, found {sorted(outputs)}"
    (kind, tables), = outputs.items()
    assert kind in KNOWN, f"output {kind} is not an InfluxDB output"
    assert len(tables) == 1, f"[[outputs.{kind}]] appears {len(tables)} times"
    return kind, tables[0]


def stores(conf: dict) -> dict[str, tuple[str, dict]]:
    found = {}
    for kind, tables in conf.get("secretstores", {}).items():
        for table in tables:
            assert re.fullmatch(r"\w+", table["id"]), f"store id {table['id']!r}: letters, digits, _ only"
            assert table["id"] not in found, f"store id {table['id']} defined twice"
            assert set(table) <= STORE_KEYS[kind], f"secretstores.{kind}: unknown {set(table) - STORE_KEYS[kind]}"
            found[table["id"]] = (kind, table)
    return found


def test_there_are_v1_and_v2_configs_with_an_os_store_and_a_file_store():
    by_name = {p.name: p for p in CONFS}
    assert {"telegraf-v2.conf", "telegraf-v1.conf", "telegraf-v2-files.conf", "telegraf-v1-files.conf"} <= set(by_name)
    for name, store_kind in (("telegraf-v2.conf", "os"), ("telegraf-v1.conf", "os"),
                             ("telegraf-v2-files.conf", "docker"), ("telegraf-v1-files.conf", "docker")):
        kinds = {kind for kind, _ in stores(load(by_name[name])).values()}
        assert kinds == {store_kind}, f"{name}: secret stores {kinds}"


@pytest.mark.parametrize("path", CONFS, ids=lambda p: p.name)
def test_output_points_at_fluxgate_over_https(path):
    kind, output = the_output(load(path))
    assert set(output) <= KNOWN[kind], f"unknown {kind} options: {set(output) - KNOWN[kind]}"
    assert output["urls"], "no urls"
    for url in output["urls"]:
        parts = urlsplit(url)
        assert parts.scheme == "https", f"{url}: tokens travel over TLS"
        assert parts.port == 8086
    assert output.get("tls_ca", "").startswith("/"), "tls_ca: the CA of fluxgate's certificate"
    assert output.get("insecure_skip_verify", False) is False
    assert output.get("content_encoding") == "gzip"


@pytest.mark.parametrize("path", CONFS, ids=lambda p: p.name)
def test_token_comes_from_a_secret_store_in_the_same_file(path):
    conf = load(path)
    kind, output = the_output(conf)
    reference = output[CREDENTIAL[kind]]
    m = SECRET_REF.fullmatch(reference)
    assert m, f"{CREDENTIAL[kind]} = {reference!r} is not a @{{store:secret}} reference"
    assert m.group(1) in stores(conf), f"secret store {m.group(1)} is not defined in {path.name}"
    # No literal token anywhere in the file.
    text = path.read_text()
    assert "REPLACE" not in text and not re.search(r"[A-Za-z0-9+/_-]{40,}", text), "a literal token?"


@pytest.mark.parametrize("path", [p for p in CONFS if "-v2" in p.name], ids=lambda p: p.name)
def test_v2_output_names_bucket_and_organization(path):
    kind, output = the_output(load(path))
    assert kind == "influxdb_v2"
    assert output["bucket"], "bucket = the database the token may write"
    assert output["organization"], "Telegraf requires organization (fluxgate ignores it)"


@pytest.mark.parametrize("path", [p for p in CONFS if "-v1" in p.name], ids=lambda p: p.name)
def test_v1_output_skips_database_creation_and_sends_the_token_as_password(path):
    kind, output = the_output(load(path))
    assert kind == "influxdb"
    assert output["database"]
    assert output["skip_database_creation"] is True, "database tokens cannot CREATE DATABASE: fluxgate answers 403"
    assert output["username"], "Basic auth needs a user name (any; fluxgate ignores it)"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_file_variant_differs_only_in_the_secret_store(version):
    kind_a, a = the_output(load(TELEGRAF / f"telegraf-{version}.conf"))
    kind_b, b = the_output(load(TELEGRAF / f"telegraf-{version}-files.conf"))
    assert kind_a == kind_b
    key = CREDENTIAL[kind_a]
    assert SECRET_REF.fullmatch(a.pop(key)).group(2) == SECRET_REF.fullmatch(b.pop(key)).group(2)
    assert a == b


def test_names_match_the_kubernetes_example():
    docs = [d for p in (DEPLOY / "kubernetes" / "base").glob("*.yaml") for d in yaml.safe_load_all(p.read_text()) if d]
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    statefulset = next(d for d in docs if d["kind"] == "StatefulSet")
    database = next(c for c in statefulset["spec"]["template"]["spec"]["containers"] if c["image"].startswith("influxdb:"))
    env = {e["name"]: e.get("value") for e in database["env"]}
    for path in CONFS:
        kind, output = the_output(load(path))
        for url in output["urls"]:
            assert urlsplit(url).hostname in services, f"{path.name}: {url} is no Service of the example"
        if kind == "influxdb_v2":
            assert output["organization"] == env["DOCKER_INFLUXDB_INIT_ORG"]
            assert output["bucket"] == env["DOCKER_INFLUXDB_INIT_BUCKET"]
        else:
            assert output["database"] == env["DOCKER_INFLUXDB_INIT_BUCKET"]
