"""The official InfluxDB 3 Python client (``influxdb3-python``) over TLS
through ``fluxgate serve --tls-cert --tls-key``: an HTTPS write and SQL
queries over ``grpc+tls`` on the proxy's one port, trusting a private CA
made at test time through the client's ``ssl_ca_cert`` (which it uses for
both its HTTP and its Flight connections).

The Flight upstream is the recording ``pyarrow.flight`` server of
``test_flight_influxdb3``; the HTTP upstream is a small recorder here that
answers every write with 204, as InfluxDB 3 does.
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.flight as flight
import pytest
from influxdb_client_3 import InfluxDBClient3
from influxdb_client_3.exceptions import InfluxDB3ClientQueryError

from support.fluxgate import FluxgateServe
from support.ports import LOOPBACK
from support.tls import CertificateAuthority
from test_flight_influxdb3 import RecordingFlightServer


class _WriteRecorder(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        with self.server.lock:
            self.server.writes.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


class WriteRecorder(ThreadingHTTPServer):
    """Records (path, headers, body) of every POST."""

    def __init__(self):
        super().__init__((LOOPBACK, 0), _WriteRecorder)
        self.writes: list = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority("fluxgate test CA")
    cert, key = ca.issue_server(directory, "proxy")
    return {"ca": ca.write(directory / "ca.pem"), "cert": cert, "key": key}


@pytest.fixture(scope="module")
def upstreams():
    grpc = RecordingFlightServer(0)
    http = WriteRecorder()
    try:
        yield grpc, http
    finally:
        grpc.shutdown()
        http.stop()


@pytest.fixture(scope="module")
def fluxgate(fluxgate_bin, pki, upstreams, tmp_path_factory):
    grpc, http = upstreams
    serve = FluxgateServe(
        fluxgate_bin,
        tmp_path_factory.mktemp("tls-serve") / "store",
        http.url,
        extra_args=[
            "--upstream-grpc", f"http://{LOOPBACK}:{grpc.port}",
            "--tls-cert", str(pki["cert"]),
            "--tls-key", str(pki["key"]),
        ],
    )
    serve.start()
    try:
        yield serve
    finally:
        code = serve.stop()
        assert code == 0, f"fluxgate serve exited with {code} on SIGTERM"


def _https(fluxgate) -> str:
    return f"https://{LOOPBACK}:{fluxgate.port}"


def test_https_write_and_grpc_tls_query_with_the_private_ca(fluxgate, pki, upstreams):
    grpc, http = upstreams
    _, token = fluxgate.create_token(read=["mydb"], write=["mydb"])
    with InfluxDBClient3(host=_https(fluxgate), token=token, database="mydb", ssl_ca_cert=str(pki["ca"])) as client:
        client.write(record="cpu,host=a value=1i")
        table = client.query("SELECT * FROM cpu -- rows=6", language="sql")
        influxql = client.query("SELECT * FROM cpu", language="influxql")
    assert table.num_rows == 6
    assert influxql.num_rows == 3

    path, headers, body = http.writes[-1]
    assert path.split("?")[0] in ("/api/v2/write", "/api/v3/write_lp"), path
    assert b"cpu,host=a value=1i" in body
    assert "authorization" not in headers
    assert headers.get("x-forwarded-proto") == "https"
    assert grpc.tickets[-1]["database"] == "mydb"
    for seen in grpc.headers_seen():
        assert "authorization" not in seen
        assert token not in repr(seen)


def test_refusals_arrive_over_tls(fluxgate, pki, upstreams):
    grpc, _ = upstreams
    _, token = fluxgate.create_token(read=["otherdb"])
    seen = len(grpc.tickets)
    with InfluxDBClient3(host=_https(fluxgate), token=token, database="mydb", ssl_ca_cert=str(pki["ca"])) as client:
        with pytest.raises(InfluxDB3ClientQueryError) as err:
            client.query("SELECT * FROM cpu", language="sql")
    cause = err.value.__cause__ or err.value.__context__
    assert isinstance(cause, flight.FlightUnauthorizedError), repr(cause)
    assert len(grpc.tickets) == seen


def test_a_client_without_the_ca_does_not_trust_the_proxy(fluxgate, upstreams):
    grpc, _ = upstreams
    _, token = fluxgate.create_token(read=["mydb"])
    seen = len(grpc.tickets)
    # Only the system's roots: the private CA is not among them.
    with InfluxDBClient3(host=_https(fluxgate), token=token, database="mydb") as client:
        with pytest.raises(Exception) as err:
            client.query("SELECT 1", language="sql")
    assert "certificate verify failed" in str(err.value), repr(err.value)
    assert len(grpc.tickets) == seen


def test_plaintext_grpc_is_not_served_on_the_tls_port(fluxgate, upstreams):
    grpc, _ = upstreams
    seen = len(grpc.tickets)
    client = flight.FlightClient(f"grpc+tcp://{LOOPBACK}:{fluxgate.port}")
    try:
        with pytest.raises(flight.FlightError):
            client.do_get(flight.Ticket(b'{"database": "mydb", "sql_query": "SELECT 1"}')).read_all()
    finally:
        client.close()
    assert len(grpc.tickets) == seen
