"""The official InfluxDB 3 Python client (``influxdb3-python``) querying
SQL and InfluxQL over Arrow Flight through ``fluxgate serve``.

The upstream is a real ``pyarrow.flight`` server started here on loopback
(``--upstream-grpc``); it decodes the JSON ticket the client sends, answers
``rows=N`` rows (N read from the query text, default 3) and records every
call's headers, so the tests can check that the caller's ``authorization``
never reaches it. The client talks to the proxy's one port, as it would to
InfluxDB 3 (HTTP writes and Flight queries on the same host:port).
"""

from __future__ import annotations

import json
import re
import threading

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from influxdb_client_3 import InfluxDBClient3
from influxdb_client_3.exceptions import InfluxDB3ClientQueryError

from support.fluxgate import FluxgateServe
from support.ports import LOOPBACK, free_port


class _HeaderRecorder(flight.ServerMiddlewareFactory):
    """Records (method, headers) of every call the upstream receives."""

    def __init__(self, calls: list, lock: threading.Lock):
        super().__init__()
        self.calls = calls
        self.lock = lock

    def start_call(self, info, headers):
        with self.lock:
            self.calls.append((str(info.method), {k.lower(): v for k, v in headers.items()}))
        return None


class RecordingFlightServer(flight.FlightServerBase):
    """DoGet: decodes the JSON ticket, answers ``rows=N`` rows of ``value``
    in batches of 10,000."""

    def __init__(self, port: int):
        self.calls: list = []
        self.tickets: list[dict] = []
        self.lock = threading.Lock()
        super().__init__(
            f"grpc://{LOOPBACK}:{port}",
            middleware={"recorder": _HeaderRecorder(self.calls, self.lock)},
        )

    def do_get(self, context, ticket):
        decoded = json.loads(ticket.ticket.decode("utf-8"))
        with self.lock:
            self.tickets.append(decoded)
        match = re.search(r"rows=(\d+)", decoded.get("sql_query", ""))
        rows = int(match.group(1)) if match else 3
        schema = pa.schema([("value", pa.int64())])

        def batches():
            # Generated as the client reads, 10,000 rows at a time.
            for start in range(0, rows, 10_000):
                values = pa.array(range(start, min(start + 10_000, rows)), type=pa.int64())
                yield pa.record_batch([values], schema=schema)

        return flight.GeneratorStream(schema, batches())

    def headers_seen(self) -> list[dict]:
        with self.lock:
            return [h for _, h in self.calls]


@pytest.fixture(scope="module")
def upstream():
    server = RecordingFlightServer(0)
    try:
        yield server
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def fluxgate(fluxgate_bin, upstream, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("flight-serve") / "store"
    # The HTTP upstream is never used here; nothing listens on it.
    serve = FluxgateServe(
        fluxgate_bin,
        data_dir,
        f"http://{LOOPBACK}:{free_port()}",
        extra_args=["--upstream-grpc", f"http://{LOOPBACK}:{upstream.port}"],
    )
    serve.start()
    try:
        yield serve
    finally:
        code = serve.stop()
        assert code == 0, f"fluxgate serve exited with {code} on SIGTERM"


def _client(fluxgate, token: str) -> InfluxDBClient3:
    return InfluxDBClient3(host=fluxgate.url, token=token, database="mydb")


def _flight_cause(err: pytest.ExceptionInfo) -> BaseException:
    """The pyarrow Flight error the client wrapped."""
    cause = err.value.__cause__ or err.value.__context__
    assert cause is not None, f"no underlying Flight error in {err.value!r}"
    return cause


def _assert_no_credentials_upstream(upstream, *secrets: str) -> None:
    for headers in upstream.headers_seen():
        assert "authorization" not in headers, headers
        for secret in secrets:
            assert secret not in repr(headers)


def test_sql_rows_come_back_with_a_read_token(fluxgate, upstream):
    _, token = fluxgate.create_token(read=["mydb"])
    with _client(fluxgate, token) as client:
        table = client.query("SELECT * FROM cpu -- rows=5", language="sql")
    assert table.num_rows == 5
    assert table.column_names == ["value"]
    assert upstream.tickets[-1] == {
        "database": "mydb",
        "sql_query": "SELECT * FROM cpu -- rows=5",
        "query_type": "sql",
    }
    _assert_no_credentials_upstream(upstream, token)


def test_influxql_rows_come_back_and_other_databases_need_read(fluxgate, upstream):
    _, token = fluxgate.create_token(read=["mydb"])
    with _client(fluxgate, token) as client:
        table = client.query("SELECT * FROM cpu", language="influxql")
        assert table.num_rows == 3
        assert upstream.tickets[-1]["query_type"] == "influxql"
        seen = len(upstream.tickets)
        with pytest.raises(InfluxDB3ClientQueryError) as err:
            client.query('SELECT * FROM "other"."autogen"."cpu"', language="influxql")
        assert isinstance(_flight_cause(err), flight.FlightUnauthorizedError)
    assert len(upstream.tickets) == seen, "a refused query reached the upstream"
    _assert_no_credentials_upstream(upstream, token)


def test_token_without_read_on_the_database_is_permission_denied(fluxgate, upstream):
    _, token = fluxgate.create_token(read=["otherdb"], write=["mydb"])
    seen = len(upstream.tickets)
    with _client(fluxgate, token) as client:
        with pytest.raises(InfluxDB3ClientQueryError) as err:
            client.query("SELECT * FROM cpu", language="sql")
    cause = _flight_cause(err)
    assert isinstance(cause, flight.FlightUnauthorizedError), repr(cause)
    assert "mydb" in str(cause)
    assert len(upstream.tickets) == seen


def test_unknown_token_is_permission_denied(fluxgate, upstream):
    with _client(fluxgate, "fgdb_not_a_real_token") as client:
        with pytest.raises(InfluxDB3ClientQueryError) as err:
            client.query("SELECT * FROM cpu", language="sql")
    assert isinstance(_flight_cause(err), flight.FlightUnauthorizedError)


def test_no_token_is_unauthenticated(fluxgate, upstream):
    # The influxdb3 client always sends a Bearer header, so the call without
    # one is made with pyarrow's own Flight client, as the client does.
    seen = len(upstream.tickets)
    client = flight.FlightClient(f"grpc+tcp://{LOOPBACK}:{fluxgate.port}")
    ticket = flight.Ticket(json.dumps({"database": "mydb", "sql_query": "SELECT 1", "query_type": "sql"}).encode())
    try:
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.do_get(ticket).read_all()
    finally:
        client.close()
    assert len(upstream.tickets) == seen


@pytest.mark.timeout(180)
def test_a_large_result_streams_through(fluxgate, upstream):
    _, token = fluxgate.create_token(read=["mydb"])
    with _client(fluxgate, token) as client:
        reader = client.query("SELECT * FROM big -- rows=250000", language="sql", mode="reader")
        total = 0
        batches = 0
        for batch in reader:
            total += batch.num_rows
            batches += 1
    assert total == 250_000
    assert batches > 1, "the result should arrive as a stream of batches"
