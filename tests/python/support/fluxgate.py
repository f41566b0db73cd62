"""``fluxgate serve`` as a test sees it: the real binary on loopback ports,
its bootstrap management token, and database tokens created through the
management gRPC API.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc

from support.grpc_stubs import management
from support.ports import LOOPBACK
from support.process import ManagedProcess

CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


def wait_for_addresses(proc: ManagedProcess, path: Path) -> dict[str, int]:
    """The ports a fluxgate process bound, from its ``--addresses-file``
    (written by rename once every listener is bound: present means complete)."""
    proc.wait_until(path.is_file, timeout=20, what=str(path))
    return {name: int(addr.rsplit(":", 1)[1]) for name, addr in json.loads(path.read_text()).items()}


class FluxgateServe:
    """A running ``fluxgate serve`` (proxy + token service, embedded store)."""

    def __init__(self, binary: Path, data_dir: Path, upstream: str, *, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None):
        # Known once the process has bound them (port 0) and said so.
        self.port = self.authz_port = self.admin_port = 0
        self.data_dir = data_dir
        self.addresses_file = data_dir.with_name(data_dir.name + "-addresses.json")
        args = [
            str(binary), "serve",
            "--listen", f"{LOOPBACK}:0",
            "--authz-listen", f"{LOOPBACK}:0",
            "--admin-listen", f"{LOOPBACK}:0",
            "--addresses-file", str(self.addresses_file),
            "--data-dir", str(data_dir),
            "--upstream", upstream,
            "--shutdown-grace", "5s",
        ] + (extra_args or [])
        clean_env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXGATE_")}
        clean_env.setdefault("RUST_LOG", "info")
        clean_env.update(env or {})
        self.proc = ManagedProcess(args, name="fluxgate-serve", env=clean_env)
        self.management_token = ""
        self._channel: grpc.Channel | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def authz_address(self) -> str:
        return f"{LOOPBACK}:{self.authz_port}"

    def start(self) -> "FluxgateServe":
        self.addresses_file.unlink(missing_ok=True)
        self.proc.start()
        bound = wait_for_addresses(self.proc, self.addresses_file)
        self.port, self.authz_port, self.admin_port = bound["proxy"], bound["token_service"], bound["admin"]
        token_file = self.data_dir / "bootstrap-management-token"
        self.proc.wait_until(token_file.is_file, timeout=10, what=str(token_file))
        self.management_token = token_file.read_text().strip()
        return self

    def stop(self) -> int | None:
        if self._channel is not None:
            self._channel.close()
        return self.proc.stop()

    def _stub(self):
        pb2, pb2_grpc = management()
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.authz_address, options=CHANNEL_OPTIONS)
        return pb2, pb2_grpc.TokenServiceStub(self._channel)

    def create_token(self, read: list[str] = (), write: list[str] = (), description: str = "test") -> tuple[str, str]:
        """Creates a database token; returns (id, token string)."""
        pb2, stub = self._stub()
        perms = {}
        for db in read:
            perms.setdefault(db, [False, False])[0] = True
        for db in write:
            perms.setdefault(db, [False, False])[1] = True
        request = pb2.CreateDatabaseTokenRequest(
            description=description,
            permissions=[pb2.DatabasePermission(database=d, read=r, write=w) for d, (r, w) in perms.items()],
        )
        created = stub.CreateDatabaseToken(
            request, metadata=[("authorization", f"Bearer {self.management_token}")], timeout=10
        )
        return created.info.id, created.token

    def revoke(self, token_id: str) -> None:
        pb2, stub = self._stub()
        stub.RevokeDatabaseToken(
            pb2.RevokeTokenRequest(id=token_id),
            metadata=[("authorization", f"Bearer {self.management_token}")],
            timeout=10,
        )

    def __enter__(self) -> "FluxgateServe":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
