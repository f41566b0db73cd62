"""fluxgate's Authorize called by a client generated from the IOx contract
file alone.

At test time ``grpc_tools.protoc`` compiles ONLY
``proto/influxdata/iox/authz/v1/authz.proto`` (copied alone into an empty
include tree, so nothing else of fluxgate is visible to protoc) into Python
stubs. Those stubs call Authorize on a real ``fluxgate authz`` process. The
management stubs, needed to create tokens, are generated separately from
``proto/fluxgate/tokens/v1/tokens.proto``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import pytest

from support.grpc_stubs import iox_contract, management
from support.fluxgate import wait_for_addresses
from support.ports import LOOPBACK
from support.process import ManagedProcess

CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


@pytest.fixture(scope="module")
def iox():
    """(authz_pb2, authz_pb2_grpc) from the IOx contract file alone."""
    return iox_contract()


@pytest.fixture(scope="module")
def mgmt():
    """(tokens_pb2, tokens_pb2_grpc) for the management API."""
    return management()


class AuthzProcess:
    def __init__(self, proc: ManagedProcess, address: str, data_dir: Path, token: str):
        self.proc = proc
        self.address = address
        self.data_dir = data_dir
        self.management_token = token


@pytest.fixture(scope="module")
def authz(fluxgate_bin, tmp_path_factory):
    """A running ``fluxgate authz`` on loopback with its bootstrap token."""
    data_dir = tmp_path_factory.mktemp("authz-data") / "store"
    addresses = data_dir.with_name("addresses.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXGATE_")}
    env.setdefault("RUST_LOG", "info")
    proc = ManagedProcess(
        [
            fluxgate_bin,
            "authz",
            "--listen",
            f"{LOOPBACK}:0",
            "--admin-listen",
            f"{LOOPBACK}:0",
            "--addresses-file",
            addresses,
            "--data-dir",
            data_dir,
            "--shutdown-grace",
            "2s",
        ],
        name="fluxgate-authz",
        env=env,
    )
    proc.start()
    try:
        port = wait_for_addresses(proc, addresses)["token_service"]
        token_file = data_dir / "bootstrap-management-token"
        proc.wait_until(token_file.is_file, timeout=10, what=str(token_file))
        token = token_file.read_text().strip()
        assert token.startswith("fgmt_")
        yield AuthzProcess(proc, f"{LOOPBACK}:{port}", data_dir, token)
    finally:
        code = proc.stop()
        assert code == 0, f"fluxgate authz exited with {code} on SIGTERM"


@pytest.fixture
def channel(authz):
    ch = grpc.insecure_channel(authz.address, options=CHANNEL_OPTIONS)
    grpc.channel_ready_future(ch).result(timeout=10)
    try:
        yield ch
    finally:
        ch.close()


def _auth(token: str):
    return [("authorization", f"Bearer {token}")]


def _perm(iox, database: str, action: str):
    pb2 = iox[0]
    rap = pb2.ResourceActionPermission
    return pb2.Permission(
        resource_action=rap(
            resource_type=rap.RESOURCE_TYPE_DATABASE,
            resource_name=database,
            action=getattr(rap, action),
        )
    )


def _create_database_token(mgmt, channel, management_token, permissions, expires_in=None):
    pb2, grpc_mod = mgmt
    stub = grpc_mod.TokenServiceStub(channel)
    request = pb2.CreateDatabaseTokenRequest(
        description="python contract test",
        permissions=[pb2.DatabasePermission(database=d, read=r, write=w) for d, r, w in permissions],
    )
    if expires_in is not None:
        request.expires_at.FromNanoseconds(time.time_ns() + int(expires_in * 1e9))
    created = stub.CreateDatabaseToken(request, metadata=_auth(management_token), timeout=10)
    assert created.token.startswith("fgdb_")
    return created


def _authorize(iox, channel, token: bytes, permissions):
    pb2, grpc_mod = iox
    stub = grpc_mod.IoxAuthorizerServiceStub(channel)
    return stub.Authorize.with_call(
        pb2.AuthorizeRequest(token=token, permissions=permissions), timeout=10
    )


def test_contract_stubs_stand_alone(iox):
    pb2, grpc_mod = iox
    assert pb2.DESCRIPTOR.package == "influxdata.iox.authz.v1"
    assert list(pb2.DESCRIPTOR.dependencies) == [], "the contract imports nothing"
    assert "IoxAuthorizerService" in pb2.DESCRIPTOR.services_by_name
    assert hasattr(grpc_mod, "IoxAuthorizerServiceStub")
    # The field numbers of BRIEF §2, as the generated client encodes them.
    fields = pb2.AuthorizeRequest.DESCRIPTOR.fields_by_name
    assert (fields["token"].number, fields["permissions"].number) == (1, 15)
    fields = pb2.AuthorizeResponse.DESCRIPTOR.fields_by_name
    assert (fields["valid"].number, fields["subject"].number, fields["permissions"].number) == (1, 2, 15)


def test_authorize_answers_the_held_subset(iox, mgmt, authz, channel):
    created = _create_database_token(
        mgmt, channel, authz.management_token, [("db1", True, False), ("db2", False, True)]
    )
    requested = [
        _perm(iox, "db1", "ACTION_READ"),
        _perm(iox, "db1", "ACTION_WRITE"),
        _perm(iox, "db2", "ACTION_WRITE"),
        _perm(iox, "db3", "ACTION_READ"),
    ]
    response, call = _authorize(iox, channel, created.token.encode(), requested)
    assert call.code() == grpc.StatusCode.OK
    assert response.valid
    assert response.HasField("subject")
    assert response.subject.id == created.info.id
    assert list(response.permissions) == [
        _perm(iox, "db1", "ACTION_READ"),
        _perm(iox, "db2", "ACTION_WRITE"),
    ]
    metadata = dict(call.initial_metadata())
    assert "fluxgate-token-expires-at-ms" not in metadata

    # READ covers READ_SCHEMA; CREATE/DELETE are never held.
    response, _ = _authorize(
        iox,
        channel,
        created.token.encode(),
        [
            _perm(iox, "db1", "ACTION_READ_SCHEMA"),
            _perm(iox, "db1", "ACTION_CREATE"),
            _perm(iox, "db2", "ACTION_DELETE"),
        ],
    )
    assert response.valid
    assert list(response.permissions) == [_perm(iox, "db1", "ACTION_READ_SCHEMA")]

    # Known token, none of the requested permissions: valid, empty list.
    response, _ = _authorize(iox, channel, created.token.encode(), [_perm(iox, "db3", "ACTION_WRITE")])
    assert response.valid
    assert response.subject.id == created.info.id
    assert list(response.permissions) == []


def test_revoked_and_unknown_tokens_are_not_valid(iox, mgmt, authz, channel):
    created = _create_database_token(mgmt, channel, authz.management_token, [("*", True, True)])
    response, _ = _authorize(iox, channel, created.token.encode(), [_perm(iox, "any", "ACTION_WRITE")])
    assert response.valid and len(response.permissions) == 1

    tokens_pb2, tokens_grpc = mgmt
    tokens_grpc.TokenServiceStub(channel).RevokeDatabaseToken(
        tokens_pb2.RevokeTokenRequest(id=created.info.id),
        metadata=_auth(authz.management_token),
        timeout=10,
    )
    for token in (created.token.encode(), b"fgdb_unknown", b"\xff\xfe not utf-8"):
        response, call = _authorize(iox, channel, token, [_perm(iox, "any", "ACTION_WRITE")])
        assert call.code() == grpc.StatusCode.OK
        assert not response.valid
        assert not response.HasField("subject")
        assert list(response.permissions) == []


def test_liveness_probe(iox, channel):
    response, call = _authorize(iox, channel, b"", [])
    assert call.code() == grpc.StatusCode.OK
    assert not response.valid
    assert not response.HasField("subject")
    assert list(response.permissions) == []


def test_management_token_holds_no_data_permission(iox, authz, channel):
    response, _ = _authorize(
        iox, channel, authz.management_token.encode(), [_perm(iox, "db1", "ACTION_READ")]
    )
    assert response.valid
    assert response.HasField("subject")
    assert list(response.permissions) == []


def test_expiry_metadata_for_expiring_tokens(iox, mgmt, authz, channel):
    created = _create_database_token(
        mgmt, channel, authz.management_token, [("db", True, False)], expires_in=3600
    )
    response, call = _authorize(iox, channel, created.token.encode(), [_perm(iox, "db", "ACTION_READ")])
    assert response.valid
    metadata = dict(call.initial_metadata())
    expected_ms = created.info.expires_at.ToMilliseconds()
    assert int(metadata["fluxgate-token-expires-at-ms"]) == expected_ms


def test_management_calls_need_a_management_token(mgmt, authz, channel):
    pb2, grpc_mod = mgmt
    stub = grpc_mod.TokenServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.ListDatabaseTokens(pb2.ListTokensRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    listed = stub.ListManagementTokens(
        pb2.ListTokensRequest(), metadata=[("authorization", f"Token {authz.management_token}")], timeout=10
    )
    assert len(listed.tokens) >= 1
    assert authz.management_token not in str(listed)
