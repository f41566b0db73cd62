"""End to end: real client libraries → ``fluxgate serve`` → a real InfluxDB.

* The Python ``influxdb`` (v1) client, as Telegraf's v1 output and Grafana do:
  Basic auth with the token as password, msgpack answers, gzip bodies.
* The Python ``influxdb-client`` (v2) client writing through the proxy to a
  capturing upstream, to see exactly what arrives.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import uuid

import pytest
import requests
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError

from support.fluxgate import FluxgateServe
from support.ports import LOOPBACK

POINTS = 10_000


@pytest.fixture
def serve(influxdb, fluxgate_bin, tmp_path):
    with FluxgateServe(fluxgate_bin, tmp_path / "data", influxdb.url) as s:
        yield s


def v1_client(serve: FluxgateServe, token: str | None, database: str, **kwargs) -> InfluxDBClient:
    return InfluxDBClient(
        host=LOOPBACK,
        port=serve.port,
        username="ignored-user",
        password=token,
        database=database,
        timeout=30,
        **kwargs,
    )


def new_db(influxdb) -> str:
    name = f"e2e_{uuid.uuid4().hex[:8]}"
    influxdb.query(f'CREATE DATABASE "{name}"')
    return name


def test_v1_client_writes_and_reads_back_every_point(serve, influxdb):
    db = new_db(influxdb)
    _, writer = serve.create_token(write=[db])
    _, reader = serve.create_token(read=[db])

    points = [
        {"measurement": "cpu", "tags": {"host": f"h{i % 10}"}, "time": 1_600_000_000_000_000_000 + i,
         "fields": {"value": float(i), "n": i}}
        for i in range(POINTS)
    ]
    w = v1_client(serve, writer, db, gzip=True)
    assert w.write_points(points, time_precision="n", batch_size=2500)

    r = v1_client(serve, reader, db)
    result = r.query('SELECT "value", "n", "host" FROM "cpu"', epoch="ns")
    rows = list(result.get_points("cpu"))
    assert len(rows) == POINTS
    by_n = {row["n"]: row for row in rows}
    assert sorted(by_n) == list(range(POINTS))
    assert by_n[1234]["value"] == 1234.0 and by_n[1234]["host"] == "h4"

    # The reader cannot write, the writer cannot read.
    with pytest.raises(InfluxDBClientError) as e:
        r.write_points(points[:1])
    assert e.value.code == 403
    assert "write" in str(e.value.content)
    with pytest.raises(InfluxDBClientError) as e:
        w.query('SELECT * FROM "cpu"')
    assert e.value.code == 403


def test_v1_client_unknown_and_missing_tokens_get_401(serve, influxdb):
    db = new_db(influxdb)
    with pytest.raises(InfluxDBClientError) as e:
        v1_client(serve, "fgdb_not-a-real-token", db).query('SELECT * FROM "cpu"')
    assert e.value.code == 401

    reply = requests.post(f"{serve.url}/write", params={"db": db}, data="cpu value=1")
    assert reply.status_code == 401
    assert reply.headers["content-type"] == "application/json"
    assert "error" in reply.json()

    reply = requests.post(f"{serve.url}/write", params={"db": db}, data="cpu value=1",
                          headers={"Authorization": "Token fgdb_unknown"})
    assert reply.status_code == 401


def test_telegraf_create_database_is_refused_with_advice(serve, influxdb):
    _, token = serve.create_token(read=["*"], write=["*"])
    reply = requests.post(f"{serve.url}/query", data={"q": 'CREATE DATABASE "telegraf"'},
                          auth=("telegraf", token))
    assert reply.status_code == 403
    assert "skip_database_creation" in reply.json()["error"]
    # And the database was indeed not created.
    names = [row[0] for row in influxdb.query("SHOW DATABASES")["results"][0]["series"][0]["values"]]
    assert "telegraf" not in names


def test_show_databases_lists_only_readable_ones(serve, influxdb):
    mine, other = new_db(influxdb), new_db(influxdb)
    _, token = serve.create_token(read=[mine])
    names = [d["name"] for d in v1_client(serve, token, mine).get_list_database()]
    assert mine in names
    assert other not in names
    assert "_internal" not in names


def test_ping_passes_without_token(serve):
    reply = requests.get(f"{serve.url}/ping")
    assert reply.status_code == 204
    assert "X-Influxdb-Version" in reply.headers


class _Capture(http.server.BaseHTTPRequestHandler):
    captured: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        type(self).captured.append((self.path, dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_v2_client_write_reaches_the_upstream_intact(fluxgate_bin, tmp_path):
    from influxdb_client import InfluxDBClient as V2Client
    from influxdb_client.client.write_api import SYNCHRONOUS

    _Capture.captured = []
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        upstream = f"http://{LOOPBACK}:{server.server_address[1]}"
        with FluxgateServe(fluxgate_bin, tmp_path / "data", upstream) as serve:
            # A bucket db/rp is database db to InfluxDB 1.8 and a bucket of
            # that whole name to 2.x: the token needs both.
            _, token = serve.create_token(write=["telegraf", "telegraf/autogen"])
            lines = [f"cpu,host=h{i} usage={i}.5 {1_600_000_000 + i}" for i in range(100)]
            with V2Client(url=serve.url, token=token, org="my-org", enable_gzip=True) as client:
                client.write_api(write_options=SYNCHRONOUS).write(
                    bucket="telegraf/autogen", record="\n".join(lines), write_precision="s"
                )
            assert len(_Capture.captured) == 1
            path, headers, body = _Capture.captured[0]
            headers = {k.lower(): v for k, v in headers.items()}
            assert path.startswith("/api/v2/write?")
            assert "bucket=telegraf%2Fautogen" in path
            # The organization is the operator's (--upstream-org), never the
            # caller's: none is configured here.
            assert "org=" not in path
            assert "authorization" not in headers
            assert headers["content-encoding"] == "gzip"
            assert gzip.decompress(body).decode() == "\n".join(lines)
            assert token not in path and token.encode() not in body

            # A token without write on the bucket's database is refused, v2-shaped.
            _, reader = serve.create_token(read=["telegraf"])
            with V2Client(url=serve.url, token=reader, org="my-org") as client:
                from influxdb_client.rest import ApiException

                with pytest.raises(ApiException) as e:
                    client.write_api(write_options=SYNCHRONOUS).write(bucket="telegraf", record="cpu v=1")
                assert e.value.status == 403
            assert len(_Capture.captured) == 1
    finally:
        server.shutdown()
        server.server_close()
