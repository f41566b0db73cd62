"""The named attacks of issue 13, against ``fluxgate serve`` in front of the
real InfluxDB 1.x (Debian's influxd 1.6.7).

Every attack is sent through the proxy with a token that may only read
database X. Afterwards influxd is asked directly (bypassing the proxy; the
test instance runs without authentication, so every direct query is an
admin's): no database, user, retention policy, measurement or point may
have appeared or gone anywhere (X included: the token cannot write), and
the proxy's answer must not carry the marker only SECRET holds.

An attack "succeeds" when influxd acted on something the token does not
allow. A refused request (4xx) and a harmless forwarded one both pass.

Not here because influxd 1.6 has no such endpoint: `bucket=x/…` on
/api/v2/write and the Flux `extern`/`ast` variants (1.8 and 2.x only; the
two Flux key-case variants are sent anyway to show nothing else happens).
Those are covered against the reference reader by tests/differential.
"""

from __future__ import annotations

import io
import json
import urllib.parse
import uuid

import pytest
import requests

from support.fluxgate import FluxgateServe

MARKER = 424242.125


@pytest.fixture
def names():
    suffix = uuid.uuid4().hex[:8]
    return {
        "x": f"bx_{suffix}",
        "secret": f"bs_{suffix}",
        "user": f"evil_{suffix}",
        # One U+FFFD, and two: a lossy decoder that makes one U+FFFD of the
        # two bytes E2 82 reads the first; influxd's rune reader, the second.
        "fffd1": f"bu_{suffix}\ufffdb",
        "fffd2": f"bu_{suffix}\ufffd\ufffdb",
    }


@pytest.fixture
def data(influxdb, names):
    """Fresh databases per test (an attack that worked must not spoil the
    next test's evidence), dropped afterwards."""
    for key in ("x", "secret", "fffd1", "fffd2"):
        influxdb.query(f'CREATE DATABASE "{names[key]}"')
    write(influxdb, names["x"], "m,host=a value=1 1000000000\n")
    write(influxdb, names["secret"], f"cpu,host=leak value={MARKER} 1000000000\n")
    write(influxdb, names["fffd2"], f"cpu,host=leak value={MARKER} 1000000000\n")
    write(influxdb, names["fffd1"], "cpu,host=ok value=1 1000000000\n")
    yield names
    for key in ("x", "secret", "fffd1", "fffd2"):
        influxdb.query(f'DROP DATABASE "{names[key]}"')
    if any(names["user"] in row for row in _rows(influxdb, "SHOW USERS")):
        influxdb.query(f'DROP USER "{names["user"]}"')


def write(influxdb, db: str, lines: str) -> None:
    reply = session().post(f"{influxdb.url}/write", params={"db": db}, data=lines.encode())
    assert reply.status_code == 204, reply.text


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # loopback only, never an environment proxy
    return s


@pytest.fixture(scope="module")
def serve(influxdb, fluxgate_bin, tmp_path_factory):
    with FluxgateServe(fluxgate_bin, tmp_path_factory.mktemp("bypass") / "data", influxdb.url) as s:
        yield s


@pytest.fixture
def token(serve, data):
    _, t = serve.create_token(read=[data["x"]])
    return t


@pytest.fixture
def fffd_token(serve, data):
    _, t = serve.create_token(read=[data["fffd1"]])
    return t


def _rows(influxdb, q, db=None):
    result = influxdb.query(q, db=db, method="POST")["results"][0]
    return sorted(tuple(v) for s in result.get("series", []) for v in s.get("values", []))


def state(influxdb, names) -> dict:
    """Everything an attack could change, read directly from influxd."""

    def rows(q, db=None):
        return _rows(influxdb, q, db)

    out = {"databases": rows("SHOW DATABASES"), "users": rows("SHOW USERS")}
    for key in ("x", "secret", "fffd1", "fffd2"):
        db = names[key]
        out[key] = {
            "measurements": rows("SHOW MEASUREMENTS", db=db),
            "series": rows("SHOW SERIES", db=db),
            "retention": rows(f'SHOW RETENTION POLICIES ON "{db}"'),
        }
    return out


# -------------------------------------------------------------- attacks
#
# Each builds (method, target, headers, body) for the proxy; `n` holds the
# database names. The smuggled statement is `{evil}`: a read of SECRET, a
# write into SECRET or X, or CREATE USER … WITH ALL PRIVILEGES.


def evil_statements(n) -> dict:
    return {
        "read": f'SELECT * FROM "{n["secret"]}".."cpu"',
        "create_user": f"CREATE USER \"{n['user']}\" WITH PASSWORD 'pw' WITH ALL PRIVILEGES",
        "into_x": f'SELECT * INTO "{n["x"]}".."stolen" FROM "{n["secret"]}".."cpu"',
        "drop_secret": f'DROP DATABASE "{n["secret"]}"',
    }


def form(pairs) -> bytes:
    return urllib.parse.urlencode(pairs).encode()


def gz(data: bytes, *, fname: bytes = b"", comment: bytes = b"", extra: bytes = b"") -> bytes:
    """One gzip member with optional FNAME / FCOMMENT / FEXTRA fields."""
    flags = (0x08 if fname else 0) | (0x10 if comment else 0) | (0x04 if extra else 0)
    header = bytearray(b"\x1f\x8b\x08") + bytes([flags]) + b"\x00\x00\x00\x00\x00\xff"
    if extra:
        header += len(extra).to_bytes(2, "little") + extra
    if fname:
        header += fname + b"\x00"
    if comment:
        header += comment + b"\x00"
    import zlib

    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    trailer = zlib.crc32(data).to_bytes(4, "little") + (len(data) & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(header) + body + trailer


def multipart(parts, boundary="XX") -> bytes:
    out = io.BytesIO()
    for headers, value in parts:
        out.write(f"--{boundary}\r\n".encode())
        for h in headers:
            out.write(h.encode() + b"\r\n")
        out.write(b"\r\n" + value.encode() + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
MULTI = {"Content-Type": "multipart/form-data; boundary=XX"}


def attack_gzip_after_member(n, evil, encoding="gzip"):
    body = gz(b"q=SELECT+*+FROM+m") + b"&" + form({"q": evil}) + b"&"
    return "POST", f"/query?db={n['x']}", {**FORM, "Content-Encoding": encoding}, body


def attack_gzip_field(n, evil, field):
    smuggled = b"&" + form({"q": evil}) + b"&"
    body = gz(b"q=SELECT+*+FROM+m", **{field: smuggled})
    return "POST", f"/query?db={n['x']}", {**FORM, "Content-Encoding": "gzip"}, body


def attack_quoted_printable(n, evil):
    # Quotes inside the smuggled statement are written =27 too, so the proxy
    # sees one string literal from the first quote to the last.
    hidden = evil.replace("=", "=3D").replace("'", "=27")
    value = "SELECT * FROM m WHERE t = '=27; " + hidden + "; SELECT * FROM m WHERE t = =27'"
    body = multipart([
        (['Content-Disposition: form-data; name="q"', "Content-Transfer-Encoding: quoted-printable"], value),
    ])
    return "POST", f"/query?db={n['x']}", MULTI, body


def attack_repeated_disposition(n, evil):
    body = multipart([
        (['Content-Disposition: form-data; name="q"', 'Content-Disposition: form-data; name="comment"'], evil),
        (['Content-Disposition: form-data; name="q"'], "SELECT * FROM m"),
    ])
    return "POST", f"/query?db={n['x']}", MULTI, body


def attack_rfc2231(n, evil, header='form-data; name="comment"; name*=UTF-8\'\'q'):
    body = multipart([
        ([f"Content-Disposition: {header}"], evil),
        (['Content-Disposition: form-data; name="q"'], "SELECT * FROM m"),
    ])
    return "POST", f"/query?db={n['x']}", MULTI, body


def attack_bound_identifier(n, evil_unused, method="GET"):
    params = json.dumps({"d": {"identifier": n["secret"]}})
    pairs = {"db": n["x"], "q": "SELECT * FROM $d..cpu", "params": params}
    if method == "GET":
        return "GET", "/query?" + form(pairs).decode(), {}, b""
    return "POST", "/query", FORM, form(pairs)


def attack_flux_json(n, evil_unused, key="Query"):
    # influxd 1.6 has no /api/v2/query: this shows only that nothing else
    # happens (1.8 and 2.x would run the last case-insensitive "query").
    body = json.dumps({"query": f'from(bucket: "{n["x"]}") |> range(start: 0)'})[:-1]
    body += f', "{key}": ' + json.dumps(f'from(bucket: "{n["secret"]}") |> range(start: 0)') + "}"
    return "POST", "/api/v2/query?org=o", {"Content-Type": "application/json"}, body.encode()


SMUGGLED = ["read", "create_user", "into_x", "drop_secret"]

ATTACKS = {
    "gzip: q after the member": lambda n, e: attack_gzip_after_member(n, e),
    "gzip: q after the member, Content-Encoding GZIP": lambda n, e: attack_gzip_after_member(n, e, "GZIP"),
    "gzip: q in FNAME": lambda n, e: attack_gzip_field(n, e, "fname"),
    "gzip: q in FCOMMENT": lambda n, e: attack_gzip_field(n, e, "comment"),
    "gzip: q in FEXTRA": lambda n, e: attack_gzip_field(n, e, "extra"),
    "multipart: quoted-printable": attack_quoted_printable,
    "multipart: repeated Content-Disposition": attack_repeated_disposition,
    "multipart: RFC 2231 name*": attack_rfc2231,
    "multipart: RFC 2231 continuation": lambda n, e: attack_rfc2231(n, e, 'form-data; name="comment"; name*0="q"'),
}


def send(serve, token, method, target, headers, body):
    headers = {**headers, "Authorization": f"Token {token}"}
    return session().request(method, f"{serve.url}{target}", headers=headers, data=body, timeout=30)


def assert_nothing_happened(influxdb, names, before, reply, what):
    after = state(influxdb, names)
    problems = []
    for key, value in before.items():
        if after[key] != value:
            problems.append(f"{key} changed: {value} -> {after[key]}")
    if str(MARKER) in reply.text or "leak" in reply.text:
        problems.append(f"the proxy's answer carries SECRET's data: {reply.text[:300]}")
    assert not problems, f"{what}: status {reply.status_code}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("smuggled", SMUGGLED)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_smuggled_statement_does_nothing(serve, influxdb, data, token, attack, smuggled):
    evil = evil_statements(data)[smuggled]
    before = state(influxdb, data)
    reply = send(serve, token, *ATTACKS[attack](data, evil))
    assert_nothing_happened(influxdb, data, before, reply, f"{attack} smuggling {smuggled}")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_bound_parameter_identifier_names_no_other_database(serve, influxdb, data, token, method):
    before = state(influxdb, data)
    reply = send(serve, token, *attack_bound_identifier(data, None, method))
    assert_nothing_happened(influxdb, data, before, reply, f"identifier parameter ({method})")


@pytest.mark.parametrize("key", ["Query", "QUERY"])
def test_flux_json_case_variants(serve, influxdb, data, token, key):
    before = state(influxdb, data)
    reply = send(serve, token, *attack_flux_json(data, None, key))
    assert_nothing_happened(influxdb, data, before, reply, f"Flux JSON {key}")


def test_fffd_database_names_are_not_confused(serve, influxdb, data, fffd_token):
    # The token reads "bu_…\ufffdb" (one U+FFFD); the query names the bytes
    # E2 82, which influxd reads as two U+FFFD: the other database.
    raw_name = data["fffd1"].encode().replace("\ufffd".encode(), b"\xe2\x82")
    quoted = urllib.parse.quote(b'SELECT * FROM "' + raw_name + b'"..cpu', safe="")
    target = f"/query?db={urllib.parse.quote(data['fffd1'])}&q={quoted}"
    before = state(influxdb, data)
    reply = send(serve, fffd_token, "GET", target, {}, b"")
    assert_nothing_happened(influxdb, data, before, reply, "U+FFFD database name")


def test_attacks_reach_influxd_when_sent_directly(influxdb, data):
    """The control: the same bytes sent straight to influxd do what the
    attacks intend (so a passing attack test means the proxy stopped it,
    not that the attack was broken)."""
    evil = evil_statements(data)["read"]
    leaked = []
    for name, build in sorted(ATTACKS.items()):
        method, target, headers, body = build(data, evil)
        reply = session().request(method, f"{influxdb.url}{target}", headers=headers, data=body, timeout=30)
        if str(MARKER) in reply.text:
            leaked.append(name)
    method, target, headers, body = attack_bound_identifier(data, None)
    if str(MARKER) in session().request(method, f"{influxdb.url}{target}", headers=headers, data=body).text:
        leaked.append("bound identifier")
    assert sorted(leaked) == sorted([*ATTACKS, "bound identifier"]), (
        f"attacks that do not work even directly against influxd: {sorted(set([*ATTACKS, 'bound identifier']) - set(leaked))}"
    )
