"""The influxdb fixture gives a real, loopback-only influxd that the official
Python v1 client can use directly (no fluxgate involved yet)."""

from __future__ import annotations

import ipaddress

import pytest
import requests
from influxdb import InfluxDBClient

from support.process import http_request, listening_sockets

DB = "fixture_check"
N_POINTS = 100


@pytest.fixture
def client(influxdb):
    session = requests.Session()
    session.trust_env = False  # never route loopback through an env proxy
    c = InfluxDBClient(host=influxdb.host, port=influxdb.port, timeout=10, session=session)
    try:
        yield c
    finally:
        c.close()


def test_ping_answers_204_with_version(influxdb):
    status, headers, _ = http_request(f"{influxdb.url}/ping")
    assert status == 204
    version = {k.lower(): v for k, v in headers.items()}.get("x-influxdb-version", "")
    assert version.startswith("1."), headers


def test_write_and_query_back_100_points(client):
    client.create_database(DB)
    try:
        points = [
            {
                "measurement": "cpu",
                "tags": {"host": f"h{i % 4}"},
                "time": 1_700_000_000_000_000_000 + i * 1_000_000_000,
                "fields": {"value": float(i), "seq": i},
            }
            for i in range(N_POINTS)
        ]
        assert client.write_points(points, database=DB, time_precision="n", batch_size=50)

        result = client.query('SELECT "value", "seq", "host" FROM "cpu"', database=DB)
        rows = list(result.get_points("cpu"))
        assert len(rows) == N_POINTS
        assert sorted(r["seq"] for r in rows) == list(range(N_POINTS))
        assert {r["host"] for r in rows} == {"h0", "h1", "h2", "h3"}
        assert all(r["value"] == float(r["seq"]) for r in rows)

        counts = client.query(
            'SELECT count("value") FROM "cpu" GROUP BY "host"', database=DB
        )
        per_host = {tags["host"]: next(counts.get_points(tags=tags))["count"]
                    for (_, tags) in counts.keys()}
        assert per_host == {"h0": 25, "h1": 25, "h2": 25, "h3": 25}
    finally:
        client.drop_database(DB)


def test_listens_on_loopback_only(influxdb):
    sockets = listening_sockets(influxdb.pid)
    assert sockets, "found no listening socket for influxd; /proc parsing broken?"
    for proto, addr, port in sockets:
        assert proto != "unix", f"influxd listens on a unix socket: {addr}"
        assert ipaddress.ip_address(addr).is_loopback, (proto, addr, port)
    tcp = sorted((addr, port) for proto, addr, port in sockets if proto.startswith("tcp"))
    assert tcp == sorted([("127.0.0.1", influxdb.port), ("127.0.0.1", influxdb.rpc_port)])
    assert not [s for s in sockets if s[0].startswith("udp")], sockets
