"""Telegraf's requests, as its two InfluxDB outputs really send them, replayed
through a real `fluxgate serve` with the values of deploy/telegraf/*.conf.

Telegraf is not available here, so the requests are rebuilt from its source
(plugins/outputs/influxdb{,_v2}/http.go): Go's net/http client, the body
streamed (Transfer-Encoding: chunked) and gzip-compressed, the User-Agent
"Telegraf/<version> Go/<version>", and

* influxdb_v2: POST <url>/api/v2/write?bucket=<bucket>&org=<organization>,
  "Authorization: Token <token>", Content-Type text/plain; charset=utf-8;
* influxdb (v1): POST <url>/write?db=<database>[&rp=<retention_policy>],
  Basic auth (username, token as password); and, unless
  skip_database_creation = true, first POST <url>/query with the form
  q=CREATE DATABASE "<database>".

Like the configs, the requests go over HTTPS: fluxgate serves a test CA's
certificate, and the client trusts that CA only (tls_ca) and checks the
host name of the configs' urls.

Upstream is a capturing HTTP server (to see exactly what arrives: the same
gzip bytes, the client's token gone, the upstream credential added), and
for v1 also the real influxd of tests/python (the points land).
"""

from __future__ import annotations

import base64
import gzip
import http.client
import http.server
import json
import socket
import ssl
import threading
import tomllib
import urllib.parse
from dataclasses import dataclass, field

import pytest

from conftest import DEPLOY, Pki
from support.fluxgate import FluxgateServe
from support.ports import LOOPBACK

TELEGRAF = DEPLOY / "telegraf"
USER_AGENT = "Telegraf/1.37.1 Go/1.25.5"
UPSTREAM_CREDENTIAL = "upstream-secret-0123456789"
LINES = b"".join(
    b"cpu,cpu=cpu%d,host=telegraf-host usage_idle=%d.5,usage_user=%d.25 %d\n" % (i, 90 + i, i, 1_700_000_000_000_000_000 + i)
    for i in range(200)
)


def output(name: str) -> dict:
    conf = tomllib.loads((TELEGRAF / name).read_text())
    (kind, tables), = conf["outputs"].items()
    return tables[0]


@dataclass
class Captured:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class CapturingUpstream:
    """An InfluxDB stand-in on 127.0.0.1 that records every request."""

    requests: list[Captured] = field(default_factory=list)

    def __post_init__(self):
        captured = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                url = urllib.parse.urlsplit(self.path)
                body = self._body()
                captured.append(Captured(self.command, url.path, urllib.parse.parse_qs(url.query),
                                         {k.lower(): v for k, v in self.headers.items()}, body))
                if url.path in ("/write", "/api/v2/write"):
                    self.send_response(204)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    payload = json.dumps({"results": [{"statement_id": 0}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            do_GET = do_POST = _handle

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    server = CapturingUpstream()
    yield server
    server.close()


def tls_args(pki: Pki) -> list[str]:
    return ["--tls-cert", str(pki.cert_path), "--tls-key", str(pki.key_path)]


@pytest.fixture
def serve(fluxgate_bin, tmp_path, upstream, pki):
    credential = tmp_path / "upstream-token"
    credential.write_text(UPSTREAM_CREDENTIAL + "\n")
    with FluxgateServe(fluxgate_bin, tmp_path / "data", upstream.url,
                       extra_args=["--upstream-token-file", str(credential), *tls_args(pki)]) as s:
        s.pki = pki
        yield s


class TelegrafConnection(http.client.HTTPSConnection):
    """HTTPS to fluxgate on loopback, verified as Telegraf verifies
    https://<host>:8086 with tls_ca: the test CA only, the urls' host name."""

    def __init__(self, hostname: str, port: int, context: ssl.SSLContext):
        super().__init__(hostname, port, context=context, timeout=15)

    def connect(self):
        sock = socket.create_connection((LOOPBACK, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def telegraf_host(conf: dict) -> str:
    return urllib.parse.urlsplit(conf["urls"][0]).hostname


def telegraf_request(serve, conf: dict, method: str, target: str, headers: dict[str, str], body: bytes,
                     *, chunked: bool) -> tuple[int, dict[str, str], bytes]:
    """One request shaped like Go's net/http client sends it."""
    conn = TelegrafConnection(telegraf_host(conf), serve.port, serve.pki.client_context())
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        all_headers = {"User-Agent": USER_AGENT, **headers, "Accept-Encoding": "gzip"}
        if chunked:
            all_headers["Transfer-Encoding"] = "chunked"
        else:
            all_headers["Content-Length"] = str(len(body))
        for name, value in all_headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        try:
            if chunked:  # Go writes the streamed body in pieces
                for start in range(0, len(body), 1024):
                    piece = body[start:start + 1024]
                    conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                conn.send(b"0\r\n\r\n")
            else:
                conn.send(body)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
            # A refusal is decided on the headers alone and may be answered
            # (and the connection closed) before the body is sent; Go's
            # transport then reads the response that arrived, as here.
            pass
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def v2_write(serve, conf: dict, token: str, body: bytes):
    query = urllib.parse.urlencode({"bucket": conf["bucket"], "org": conf["organization"]})
    return telegraf_request(serve, conf, "POST", f"/api/v2/write?{query}", {
        "Authorization": f"Token {token}",
        "Content-Encoding": "gzip",
        "Content-Type": "text/plain; charset=utf-8",
    }, body, chunked=True)


def v1_write(serve, conf: dict, token: str, body: bytes, rp: str | None = None):
    params = {"db": conf["database"]}
    if rp or conf.get("retention_policy"):
        params["rp"] = rp or conf["retention_policy"]
    return telegraf_request(serve, conf, "POST", f"/write?{urllib.parse.urlencode(params)}", {
        "Authorization": basic(conf["username"], token),
        "Content-Encoding": "gzip",
        "Content-Type": "text/plain; charset=utf-8",
    }, body, chunked=True)


def assert_forwarded_intact(captured: Captured, body: bytes, client_token: str):
    assert captured.body == body, "the gzip body changed on its way upstream"
    assert gzip.decompress(captured.body) == LINES
    assert captured.headers.get("content-encoding") == "gzip"
    assert captured.headers.get("authorization") == f"Token {UPSTREAM_CREDENTIAL}"
    for name, value in captured.headers.items():
        assert client_token not in value, f"the client's token reached upstream in {name}"


def test_v2_output_write_is_forwarded_intact(serve, upstream):
    conf = output("telegraf-v2.conf")
    _, token = serve.create_token(write=[conf["bucket"]], description="telegraf v2")
    body = gzip.compress(LINES)

    status, _, reply = v2_write(serve, conf, token, body)
    assert status == 204, reply

    assert len(upstream.requests) == 1
    got = upstream.requests[0]
    assert (got.method, got.path) == ("POST", "/api/v2/write")
    # The caller's organization is never forwarded (InfluxDB 2 would read the
    # bucket in it): fluxgate sends the operator's (--upstream-org) or none.
    assert got.query == {"bucket": [conf["bucket"]]}
    assert_forwarded_intact(got, body, token)


def test_v2_output_without_permission_gets_the_v2_error_shape(serve, upstream):
    conf = output("telegraf-v2.conf")
    _, other = serve.create_token(write=["some_other_database"])
    status, headers, reply = v2_write(serve, conf, other, gzip.compress(LINES))
    assert status == 403
    assert json.loads(reply)["code"] == "forbidden"  # Telegraf logs code and message
    status, _, reply = v2_write(serve, conf, "not-a-token", gzip.compress(LINES))
    assert status == 401 and json.loads(reply)["code"] == "unauthorized"
    assert upstream.requests == []


@pytest.mark.parametrize("rp", [None, "autogen"])
def test_v1_output_write_with_basic_auth_is_forwarded_intact(serve, upstream, rp):
    conf = output("telegraf-v1.conf")
    _, token = serve.create_token(write=[conf["database"]], description="telegraf v1")
    body = gzip.compress(LINES)

    status, _, reply = v1_write(serve, conf, token, body, rp=rp)
    assert status == 204, reply

    assert len(upstream.requests) == 1
    got = upstream.requests[0]
    assert (got.method, got.path) == ("POST", "/write")
    expected = {"db": [conf["database"]]}
    if rp:
        expected["rp"] = [rp]
    assert got.query == expected
    assert_forwarded_intact(got, body, token)


def test_v1_output_create_database_at_start_is_refused_naming_the_option(serve, upstream):
    """What Telegraf sends first when skip_database_creation is false."""
    conf = output("telegraf-v1.conf")
    _, token = serve.create_token(write=[conf["database"]], read=[conf["database"]])
    form = urllib.parse.urlencode({"q": f'CREATE DATABASE "{conf["database"]}"'}).encode()
    status, headers, reply = telegraf_request(serve, conf, "POST", "/query", {
        "Authorization": basic(conf["username"], token),
        "Content-Type": "application/x-www-form-urlencoded",
    }, form, chunked=False)
    assert status == 403
    assert headers["content-type"].startswith("application/json")
    error = json.loads(reply)["error"]  # Telegraf reads {"error": …} / {"results": [{"error"}]}
    assert "skip_database_creation" in error
    assert upstream.requests == [], "an admin statement reached the database"


def test_v1_output_writes_land_in_a_real_influxdb(influxdb, fluxgate_bin, tmp_path, pki):
    """The database exists (created with the database's own admin access, as
    skip_database_creation = true expects); Telegraf's gzip v1 write goes
    through fluxgate and every point is stored."""
    conf = output("telegraf-v1.conf")
    influxdb.query(f'CREATE DATABASE "{conf["database"]}"')
    with FluxgateServe(fluxgate_bin, tmp_path / "data", influxdb.url, extra_args=tls_args(pki)) as serve:
        serve.pki = pki
        _, token = serve.create_token(write=[conf["database"]])
        status, _, reply = v1_write(serve, conf, token, gzip.compress(LINES))
        assert status == 204, reply
    result = influxdb.query("SELECT count(usage_idle) FROM cpu", db=conf["database"])
    series = result["results"][0]["series"][0]
    assert series["values"][0][1] == LINES.count(b"\n")
