"""The official Python client libraries, as they really send requests.

* ``influxdb`` (v1) with ``gzip=True`` sends ``Content-Encoding: gzip`` on
  every request, including GET and POST /query with the query in the URL and
  no body, and bound parameters as ``params=`` JSON: it must work through
  fluxgate in front of the real influxd (query, write, SELECT … INTO).
* ``influxdb-client`` (v2) sends Flux queries as JSON with an ``extern``
  (usually empty; with ``params=`` it holds ``option NAME = <literal>``
  statements; with profilers an ``import "profiler"`` and an ``option
  profiler.enabledProfilers = [...]``).

The exact requests both clients send are recorded under
tests/fixtures/clients/ (one file per client and version); the Rust
differential tests replay them through the proxy. Re-record with
``FLUXGATE_UPDATE_CLIENT_FIXTURES=1 pytest tests/python/test_client_compat.py``.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import os
import threading
import uuid
from pathlib import Path

import influxdb as influxdb_v1
import influxdb_client
import pytest
import requests
from influxdb import InfluxDBClient
from influxdb_client.client.query_api import QueryOptions

from support.fluxgate import FluxgateServe
from support.ports import LOOPBACK

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "clients"
UPDATE = os.environ.get("FLUXGATE_UPDATE_CLIENT_FIXTURES") == "1"
RECORDED_HEADERS = ("Content-Type", "Content-Encoding", "Accept")


class Capture:
    """A loopback HTTP server that records every request and answers as
    InfluxDB would, minimally: empty Flux CSV, an empty /query result, 204
    for writes."""

    def __init__(self):
        self.requests: list[dict] = []
        capture = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                capture.requests.append(
                    {"method": self.command, "target": self.path, "headers": dict(self.headers), "body": body}
                )
                if self.path.startswith("/api/v2/query"):
                    self._answer(200, "text/csv; charset=utf-8", b"\r\n")
                elif self.path.startswith("/query"):
                    self._answer(200, "application/json", b'{"results":[{"statement_id":0}]}')
                else:
                    self._answer(204, None, b"")

            def _answer(self, status, content_type, body):
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- what the clients send


def v2_queries(client: influxdb_client.InfluxDBClient, bucket: str) -> None:
    """The influxdb-client query shapes: plain, with parameters, with profilers."""
    plain = client.query_api()
    plain.query(f'from(bucket: "{bucket}") |> range(start: -1h)')
    plain.query(
        f'from(bucket: "{bucket}") |> range(start: _start) |> filter(fn: (r) => r.host == _host) |> limit(n: _n)',
        params={
            "_start": datetime.timedelta(hours=-1),
            "_host": "a",
            "_n": 3,
            "_f": 1.5,
            "_b": True,
            "_t": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
            "_l": ["a", "b"],
        },
    )
    profiled = client.query_api(query_options=QueryOptions(profilers=["query", "operator"]))
    profiled.query(f'from(bucket: "{bucket}") |> range(start: -1h)')


V2_NAMES = ["plain", "params", "profilers"]


def v1_calls(client: InfluxDBClient) -> None:
    """The influxdb (v1) client's requests with gzip=True."""
    client.query('SELECT * FROM "m"')
    client.query('SELECT * FROM "m" WHERE "host" = $host', bind_params={"host": "a"})
    client.query('SELECT * INTO "m2" FROM "m"')
    client.write_points([{"measurement": "m", "tags": {"host": "a"}, "fields": {"value": 1.0}, "time": 1}],
                        time_precision="s")


V1_NAMES = ["select", "select with bind_params", "select into (POST)", "write (gzip body)"]


def recorded(captured: list[dict], names: list[str]) -> list[dict]:
    assert len(captured) == len(names), [c["target"] for c in captured]
    out = []
    for name, c in zip(names, captured):
        body = c["body"]
        entry = {
            "name": name,
            "method": c["method"],
            "target": c["target"],
            "headers": {k: v for k, v in c["headers"].items() if k in RECORDED_HEADERS},
            "body_b64": base64.b64encode(body).decode(),
        }
        try:
            entry["body"] = body.decode()
        except UnicodeDecodeError:
            pass
        out.append(entry)
    return out


def fixture_path(package: str, version: str) -> Path:
    return FIXTURES / f"{package}-{version}.json"


def check_fixture(package: str, version: str, requests_: list[dict], note: str) -> None:
    """Compares with (or, when re-recording, writes) the committed fixture."""
    path = fixture_path(package, version)
    document = {
        "client": f"{package} (Python)",
        "version": version,
        "note": note,
        "recorded_by": "tests/python/test_client_compat.py (FLUXGATE_UPDATE_CLIENT_FIXTURES=1)",
        "requests": requests_,
    }
    if UPDATE:
        FIXTURES.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        return
    committed = sorted(FIXTURES.glob(f"{package}-*.json"))
    assert committed, f"no fixture for {package}: record one with FLUXGATE_UPDATE_CLIENT_FIXTURES=1"
    if not path.exists():
        pytest.skip(f"{package} {version} has no fixture of its own (committed: {[p.name for p in committed]}); "
                    "re-record with FLUXGATE_UPDATE_CLIENT_FIXTURES=1 and review the diff")
    expected = json.loads(path.read_text())["requests"]
    for got, want in zip(requests_, expected):
        if package == "influxdb":
            # gzip headers carry a timestamp: compare the decoded write body.
            import gzip as gz

            if got["headers"].get("Content-Encoding") == "gzip" and got["body_b64"] and want["body_b64"]:
                assert gz.decompress(base64.b64decode(got["body_b64"])) == gz.decompress(
                    base64.b64decode(want["body_b64"])
                ), got["name"]
                got = {k: v for k, v in got.items() if k != "body_b64"}
                want = {k: v for k, v in want.items() if k != "body_b64"}
        assert got == want, f"{package} {version} now sends something else for {got['name']!r}"
    assert len(requests_) == len(expected)


def test_influxdb_client_v2_query_bodies(tmp_path):
    with Capture() as capture:
        with influxdb_client.InfluxDBClient(url=capture.url, token="t", org="o", enable_gzip=True) as client:
            v2_queries(client, "x")
    requests_ = recorded(capture.requests, V2_NAMES)
    for r in requests_:
        # enable_gzip compresses writes and asks for gzip answers; queries
        # go out as plain JSON.
        assert "Content-Encoding" not in r["headers"], r
        body = json.loads(r["body"])
        assert set(body) == {"extern", "query", "dialect"}, body
    check_fixture(
        "influxdb-client",
        influxdb_client.__version__,
        requests_,
        "POST /api/v2/query bodies: plain, with params (extern = option statements), with profilers "
        "(extern = import \"profiler\" + option profiler.enabledProfilers); enable_gzip=True",
    )


def test_influxdb_v1_client_requests(tmp_path):
    with Capture() as capture:
        client = InfluxDBClient(LOOPBACK, capture.server.server_port, "user", "token", "x", gzip=True)
        v1_calls(client)
        client.close()
    requests_ = recorded(capture.requests, V1_NAMES)
    assert all(r["headers"].get("Content-Encoding") == "gzip" for r in requests_)
    assert requests_[2]["method"] == "POST" and requests_[2]["body_b64"] == ""
    check_fixture(
        "influxdb",
        influxdb_v1.__version__,
        requests_,
        "gzip=True: Content-Encoding: gzip on every request, empty bodies on /query (GET, and POST for SELECT INTO); "
        "Authorization (Basic) is not recorded",
    )


# ---------------------------------------------------------------- through fluxgate


@pytest.fixture
def serve(influxdb, fluxgate_bin, tmp_path):
    with FluxgateServe(fluxgate_bin, tmp_path / "data", influxdb.url) as s:
        yield s


def test_v1_client_with_gzip_works_through_fluxgate(serve, influxdb):
    db = f"compat_{uuid.uuid4().hex[:8]}"
    influxdb.query(f'CREATE DATABASE "{db}"')
    _, token = serve.create_token(read=[db], write=[db])
    client = InfluxDBClient(LOOPBACK, serve.port, "ignored", token, db, gzip=True, timeout=30)
    try:
        assert client.write_points(
            [{"measurement": "m", "tags": {"host": h}, "fields": {"value": float(i)}, "time": i}
             for i, h in enumerate(["a", "b", "a"], start=1)],
            time_precision="s",
        )
        rows = list(client.query('SELECT * FROM "m"').get_points())
        assert len(rows) == 3
        bound = list(client.query('SELECT * FROM "m" WHERE "host" = $host', bind_params={"host": "a"}).get_points())
        assert [r["value"] for r in bound] == [1.0, 3.0]
        # POST, empty body, Content-Encoding: gzip (issue 13, last item).
        client.query('SELECT * INTO "m2" FROM "m"')
    finally:
        client.close()
    copied = influxdb.query('SELECT count("value") FROM "m2"', db=db)["results"][0]["series"][0]["values"]
    assert copied[0][1] == 3


def test_v2_client_queries_pass_through_fluxgate(fluxgate_bin, tmp_path):
    """What the v2 client sends is accepted and forwarded with the same
    query, extern and dialect (re-serialized canonically is fine)."""
    with Capture() as upstream:
        with FluxgateServe(fluxgate_bin, tmp_path / "data", upstream.url) as serve:
            _, token = serve.create_token(read=["x"])
            with Capture() as direct:
                with influxdb_client.InfluxDBClient(url=direct.url, token="t", org="o") as client:
                    v2_queries(client, "x")
            with influxdb_client.InfluxDBClient(url=serve.url, token=token, org="o") as client:
                v2_queries(client, "x")
    assert len(upstream.requests) == len(direct.requests) == 3
    for sent, forwarded in zip(direct.requests, upstream.requests):
        want, got = json.loads(sent["body"]), json.loads(forwarded["body"])
        for key in ("query", "extern", "dialect"):
            assert got.get(key) == want.get(key), (key, got, want)
        assert token not in json.dumps(forwarded["headers"])


def test_capture_server_sees_requests_unproxied():
    """The capture server itself: a plain request is recorded as sent."""
    with Capture() as capture:
        s = requests.Session()
        s.trust_env = False
        reply = s.post(f"{capture.url}/query?db=x", data=b"q=SELECT+1",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert reply.status_code == 200
    assert capture.requests[0]["body"] == b"q=SELECT+1"
