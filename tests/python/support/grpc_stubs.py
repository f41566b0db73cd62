"""Python gRPC stubs generated at test time with ``grpc_tools.protoc``.

Each proto file is copied alone into an empty include tree before it is
compiled, so a stub is built from that file and nothing else of fluxgate
(the IOx contract test relies on this). Results are cached per process.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[3]
IOX_CONTRACT = Path("influxdata/iox/authz/v1/authz.proto")
MANAGEMENT = Path("fluxgate/tokens/v1/tokens.proto")
WELL_KNOWN_PROTOS = Path(grpc_tools.__file__).resolve().parent / "_proto"


@lru_cache(maxsize=None)
def generate(relative: Path, with_well_known: bool = False):
    """(pb2, pb2_grpc) modules for ``proto/<relative>``, compiled alone."""
    tmp = Path(tempfile.mkdtemp(prefix="fluxgate-stubs-"))
    src, gen = tmp / "src", tmp / "gen"
    (src / relative).parent.mkdir(parents=True)
    gen.mkdir()
    shutil.copyfile(REPO_ROOT / "proto" / relative, src / relative)
    args = ["grpc_tools.protoc", f"-I{src}"]
    if with_well_known:
        args.append(f"-I{WELL_KNOWN_PROTOS}")
    args += [f"--python_out={gen}", f"--grpc_python_out={gen}", str(src / relative)]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed on {relative} ({code})")
    sys.path.insert(0, str(gen))
    importlib.invalidate_caches()
    module = ".".join(relative.with_suffix("").parts)
    return importlib.import_module(f"{module}_pb2"), importlib.import_module(f"{module}_pb2_grpc")


def management():
    """(tokens_pb2, tokens_pb2_grpc) for fluxgate's management API."""
    return generate(MANAGEMENT, True)


def iox_contract():
    """(authz_pb2, authz_pb2_grpc) from the IOx contract file alone."""
    return generate(IOX_CONTRACT, False)
