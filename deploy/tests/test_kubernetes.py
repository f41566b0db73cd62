"""deploy/kubernetes: schema-valid, lint-clean, and consistent with fluxgate.

* yamllint (strict, deploy/.yamllint.yaml) over the YAML files of deploy/;
* every manifest of the base, and the example overlay rendered the way
  kustomize does (namespace, images, JSON 6902 patches: the only features
  used, which the renderer below checks), validated against the Kubernetes
  OpenAPI schemas shipped by the PyPI package kubernetes-validate, in strict
  mode (unknown fields are errors), for the oldest and newest versions
  below;
* the TOML files of the ConfigMap, extracted and run through the real
  `fluxgate check-config`;
* cross-references a schema cannot see: config files, secrets and data
  paths are mounted where the TOML says; ports, probes and Services agree;
  the token-service URL resolves to its Service; InfluxDB listens on
  loopback, where the proxy's upstream points; NetworkPolicies let only the
  proxy port in and only proxies reach the token service; pods meet the
  "restricted" Pod Security Standard; Secrets hold placeholders only;
* the token service's replicas share a PostgreSQL store (TLS verified,
  password from a Secret file) and a PodDisruptionBudget keeps them up;
* deploy/README.md's first-management-token commands, run against a real
  token service configured like the Deployment (mutual TLS on) over a real
  PostgreSQL (TLS, password file).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import shlex
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from conftest import DEPLOY, check_config, clean_env, parse_duration, require_module, require_tool
from support.ports import LOOPBACK, free_ports
from support.process import ManagedProcess

K8S = DEPLOY / "kubernetes"
BASE = K8S / "base"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
# Oldest Kubernetes the manifests target, and the newest kubernetes-validate knows.
K8S_MIN_VERSION = "1.30.0"

CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "StorageClass"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


# -- loading and rendering -------------------------------------------------------


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")


def json_pointer_apply(doc: dict, op: dict) -> None:
    """One JSON 6902 operation (add/replace/remove) on ``doc``, in place."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    parent = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    kind = op["op"]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, op["value"])
        elif kind == "replace":
            parent[index] = op["value"]
        elif kind == "remove":
            del parent[index]
        else:
            raise AssertionError(f"unsupported patch op {kind}")
    else:
        if kind in ("replace", "remove"):
            assert last in parent, f"patch path {op['path']} does not exist"
        if kind in ("add", "replace"):
            parent[last] = op["value"]
        elif kind == "remove":
            del parent[last]
        else:
            raise AssertionError(f"unsupported patch op {kind}")


def pod_spec(doc: dict) -> dict | None:
    if doc["kind"] in WORKLOADS:
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "Pod":
        return doc["spec"]
    return None


def pod_volumes(doc: dict) -> list[dict]:
    """The pod's volumes, a StatefulSet's claim templates included."""
    volumes = list(pod_spec(doc).get("volumes", []))
    for claim in doc["spec"].get("volumeClaimTemplates", []):
        volumes.append({"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": None}})
    return volumes


def all_containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def split_image(image: str) -> tuple[str, str | None]:
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        return name, tag
    return name, None


def render(directory: Path) -> list[dict]:
    """``kustomize build`` for the features this repository uses."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    supported = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
    unsupported = set(kustomization) - supported
    assert not unsupported, (
        f"{directory}: kustomization uses {sorted(unsupported)}, which this test's renderer does not "
        "implement; extend render() in deploy/tests/test_kubernetes.py"
    )
    docs: list[dict] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        docs += render(path) if path.is_dir() else load_docs(path)
    docs = copy.deepcopy(docs)

    namespace = kustomization.get("namespace")
    if namespace:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace

    for image in kustomization.get("images", []):
        hits = 0
        for doc in docs:
            spec = pod_spec(doc)
            for container in all_containers(spec) if spec else []:
                name, tag = split_image(container["image"])
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
                    hits += 1
        assert hits, f"{directory}: images entry {image['name']} matches no container"

    for patch in kustomization.get("patches", []):
        target = patch["target"]
        ops = yaml.safe_load(patch["patch"])
        assert isinstance(ops, list), "only JSON 6902 patches (a list of ops) are supported"
        matched = [d for d in docs if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]]
        assert matched, f"{directory}: patch target {target} matches nothing"
        for doc in matched:
            for op in ops:
                json_pointer_apply(doc, op)
    return docs


EXAMPLE = K8S / "overlays" / "example"


@pytest.fixture(scope="module")
def app() -> list[dict]:
    """The whole application: the example overlay rendered (the base plus
    the namespace and the placeholder Secrets)."""
    return render(EXAMPLE)


def find(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in WORKLOADS]


def fluxgate_containers(docs: list[dict]):
    """(workload, container, subcommand, config path) of every fluxgate container."""
    for doc in workloads(docs):
        spec = pod_spec(doc)
        for container in spec["containers"]:
            if container["name"] != "fluxgate":
                continue
            args = container["args"]
            assert "--config" in args, f"{doc['metadata']['name']}/{container['name']}: no --config"
            yield doc, container, args[0], args[args.index("--config") + 1]


def volume_for(doc: dict, container: dict, path: str) -> tuple[dict, dict, str]:
    """The (volume, mount, path inside the volume) holding ``path``."""
    best = None
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/")
        if path == root or path.startswith(root + "/"):
            if best is None or len(root) > len(best["mountPath"].rstrip("/")):
                best = mount
    assert best is not None, f"{container['name']}: {path} is on no volume (the root filesystem is read-only)"
    volume = next(v for v in pod_volumes(doc) if v["name"] == best["name"])
    relative = path[len(best["mountPath"].rstrip("/")):].lstrip("/")
    if best.get("subPath"):
        relative = best["subPath"] + ("/" + relative if relative else "")
    return volume, best, relative


def projected_key(source: dict, relative: str) -> str | None:
    """The ConfigMap/Secret key that appears at ``relative`` in its volume."""
    items = source.get("items")
    if items is None:
        return relative
    for item in items:
        if item["path"] == relative:
            return item["key"]
    return None


def config_toml(docs: list[dict], doc: dict, container: dict, path: str) -> str:
    volume, _, relative = volume_for(doc, container, path)
    assert "configMap" in volume, f"{path} is not mounted from a ConfigMap"
    key = projected_key(volume["configMap"], relative)
    assert key is not None, f"{path}: no item of ConfigMap volume {volume['name']} lands there"
    configmap = find(docs, "ConfigMap", volume["configMap"]["name"])
    return configmap["data"][key]


def labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def named_port(container: dict, name: str) -> int:
    for port in container.get("ports", []):
        if port["name"] == name:
            return port["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {name}")


# -- lint and schemas --------------------------------------------------------------


# The directories of this suite (deploy/ghz belongs to the benchmarks).
LINTED = ["docker", "kubernetes", "systemd", "telegraf", ".yamllint.yaml"]


def test_yamllint_strict_over_deploy():
    yamllint = require_tool("yamllint")
    out = subprocess.run(
        [yamllint, "--strict", "-f", "parsable", "-c", str(DEPLOY / ".yamllint.yaml"),
         *(str(DEPLOY / p) for p in LINTED)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, f"yamllint:\n{out.stdout}{out.stderr}"


def test_every_base_file_is_in_the_kustomization():
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = sorted(kustomization["resources"])
    assert listed == sorted(p.name for p in manifest_files(BASE)), "base/*.yaml and resources: differ"
    for overlay in OVERLAYS:
        k = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        local = [r for r in k["resources"] if not r.startswith("..")]
        assert sorted(local) == sorted(p.name for p in manifest_files(overlay)), overlay


def kubernetes_versions() -> list[str]:
    kv = require_module("kubernetes_validate.utils")
    return [K8S_MIN_VERSION, kv.latest_version()]


def validate_all(docs: list[dict], where: str) -> None:
    kv = require_module("kubernetes_validate.utils")
    errors = []
    for version in kubernetes_versions():
        for doc in docs:
            name = f"{where}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')} @ {version}"
            try:
                kv.validate(doc, version, strict=True)
            except kv.SchemaNotFoundError as e:
                errors.append(f"{name}: no schema ({e.message})")
            except kv.ValidationError as e:
                errors.append(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", manifest_files(BASE), ids=lambda p: p.name)
def test_base_manifest_matches_the_kubernetes_schemas(path):
    validate_all(load_docs(path), path.name)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_rendered_overlay_matches_the_kubernetes_schemas(overlay):
    docs = render(overlay)
    validate_all(docs, f"overlays/{overlay.name}")
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == kustomization["namespace"]
    for image in kustomization.get("images", []):
        for doc in workloads(docs):
            for container in all_containers(pod_spec(doc)):
                assert split_image(container["image"])[0] != image["name"], "image not replaced"


def test_strict_validation_rejects_a_typo(app):
    """The schema check has teeth: a misspelt field fails it."""
    kv = require_module("kubernetes_validate.utils")
    deployment = copy.deepcopy(find(app, "Deployment", "fluxgate-authz"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpget"] = container["readinessProbe"].pop("httpGet")
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_MIN_VERSION, strict=True)


# -- fluxgate's configuration --------------------------------------------------------


def test_configmap_tomls_pass_fluxgate_check_config(app, fluxgate_bin, tmp_path):
    seen = set()
    for doc, container, command, path in fluxgate_containers(app):
        text = config_toml(app, doc, container, path)
        tomllib.loads(text)
        file = tmp_path / f"{doc['metadata']['name']}-{Path(path).name}"
        file.write_text(text)
        out = check_config(fluxgate_bin, file, command)
        assert out.returncode == 0, f"{path} ({command}): {out.stderr}{out.stdout}"
        seen.add(command)
    assert seen == {"proxy", "authz"}


def test_paths_in_the_config_are_mounted(app):
    """Every absolute path a config names is on a volume of its container,
    and a path into a Secret volume is one of that Secret's keys."""
    for doc, container, command, path in fluxgate_containers(app):
        config = tomllib.loads(config_toml(app, doc, container, path))
        paths = [(k, v) for k, v in config.items() if isinstance(v, str) and v.startswith("/")]
        store = config.get("store", "")
        for name, values in parse_qs(urlsplit(store).query).items():
            if name == "sslrootcert":
                paths += [(f"store's {name}", v) for v in values]
        for key, value in paths:
            volume, mount, relative = volume_for(doc, container, value)
            if "secret" in volume:
                secret = find(app, "Secret", volume["secret"]["secretName"])
                secret_key = projected_key(volume["secret"], relative)
                keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
                assert secret_key in keys, f"{command}: {key} = {value}: not a key of Secret {secret['metadata']['name']}"
                assert mount.get("readOnly") is True
            elif key == "data-dir" and not store.startswith("postgres"):
                # The SQLite store lives in the data directory.
                assert "persistentVolumeClaim" in volume, (
                    f"{command}: data-dir {value} is not on a persistent volume"
                )
            elif key == "audit-log":
                pytest.fail("audit-log to a file inside the pod: use stdout")


def test_ports_probes_and_listen_addresses_agree(app):
    for doc, container, command, path in fluxgate_containers(app):
        config = tomllib.loads(config_toml(app, doc, container, path))
        listen_host, listen_port = host_port(config["listen"])
        admin_host, admin_port = host_port(config["admin-listen"])
        # The pod's network namespace: bind its address so Services and probes reach it.
        assert listen_host == "0.0.0.0" and admin_host == "0.0.0.0"
        serving = "http" if command == "proxy" else "grpc"
        assert named_port(container, serving) == listen_port
        assert named_port(container, "admin") == admin_port
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}

        # Longer than the drain after SIGTERM.
        grace = parse_duration(config.get("shutdown-grace", "30s"))
        assert pod_spec(doc)["terminationGracePeriodSeconds"] > grace


def service_target(docs: list[dict], service: dict, port: int) -> tuple[dict, dict, int]:
    """(workload, container, containerPort) a Service port leads to."""
    spec_port = next(p for p in service["spec"]["ports"] if p["port"] == port)
    selector = {"matchLabels": service["spec"]["selector"]}
    targets = [d for d in workloads(docs) if labels_match(selector, d["spec"]["template"]["metadata"]["labels"])]
    assert len(targets) == 1, f"Service {service['metadata']['name']} selects {len(targets)} workloads"
    target_port = spec_port["targetPort"]
    for container in pod_spec(targets[0])["containers"]:
        for p in container.get("ports", []):
            if target_port in (p.get("name"), p["containerPort"]):
                return targets[0], container, p["containerPort"]
    raise AssertionError(f"Service {service['metadata']['name']}: targetPort {target_port} matches no container port")


def test_proxy_reaches_the_token_service_through_its_service(app):
    proxies = [(d, c, p) for d, c, cmd, p in fluxgate_containers(app) if cmd == "proxy"]
    assert proxies
    for doc, container, path in proxies:
        config = tomllib.loads(config_toml(app, doc, container, path))
        url = urlsplit(config["authz"])
        service = find(app, "Service", url.hostname.split(".")[0])
        workload, target, port = service_target(app, service, url.port)
        assert target["args"][0] == "authz"
        assert port == named_port(target, "grpc")


def test_clients_reach_fluxgate_never_the_database(app):
    statefulset = find(app, "StatefulSet", "influxdb")
    service = find(app, "Service", statefulset["spec"]["serviceName"])
    for port in service["spec"]["ports"]:
        _, container, _ = service_target(app, service, port["port"])
        assert container["name"] == "fluxgate", "a Service port leads to the database"

    spec = pod_spec(statefulset)
    database = next(c for c in spec["containers"] if c["image"].startswith("influxdb:"))
    env = {e["name"]: e.get("value") for e in database.get("env", [])}
    bind = env.get("INFLUXD_HTTP_BIND_ADDRESS") or env.get("INFLUXDB_HTTP_BIND_ADDRESS")
    assert bind, "the database's HTTP bind address is not set"
    db_host, db_port = host_port(bind)
    assert ipaddress.ip_address(db_host).is_loopback, f"the database binds {bind}, not loopback"
    assert not database.get("ports"), "the database container declares ports"

    proxy = next((d, c, p) for d, c, cmd, p in fluxgate_containers(app) if cmd == "proxy" and d is statefulset)
    config = tomllib.loads(config_toml(app, *proxy))
    upstream = urlsplit(config["upstream"])
    assert ipaddress.ip_address(upstream.hostname).is_loopback and upstream.port == db_port


def test_token_service_replicas_share_a_verified_postgres_store(app):
    """Several replicas over one PostgreSQL, reached through its Service with
    TLS and the server's name checked, the password from a Secret file; a
    PodDisruptionBudget keeps most replicas up through voluntary
    disruptions."""
    authz = [(d, c, p) for d, c, cmd, p in fluxgate_containers(app) if cmd == "authz"]
    assert len(authz) == 1
    doc, container, path = authz[0]
    assert doc["kind"] == "Deployment"
    replicas = doc["spec"]["replicas"]
    assert replicas >= 3, "enough replicas to lose one during maintenance and another by accident"
    assert doc["spec"]["strategy"]["type"] == "RollingUpdate"
    assert doc["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 1

    labels = doc["spec"]["template"]["metadata"]["labels"]
    budgets = [d for d in app if d["kind"] == "PodDisruptionBudget" and labels_match(d["spec"]["selector"], labels)]
    assert len(budgets) == 1, "one PodDisruptionBudget for the token service"
    assert 2 <= budgets[0]["spec"]["minAvailable"] < replicas

    config = tomllib.loads(config_toml(app, doc, container, path))
    url = urlsplit(config["store"])
    assert url.scheme == "postgres" and not url.password, "the password comes from a file"
    assert parse_qs(url.query)["sslmode"] == ["verify-full"], "PostgreSQL's certificate and name are checked"
    assert "store-password-file" in config
    service = find(app, "Service", url.hostname.split(".")[0])
    workload, target, port = service_target(app, service, url.port)
    assert workload["kind"] == "StatefulSet" and target["name"] == "postgres"
    assert port == named_port(target, "postgres")
    assert workload["spec"]["volumeClaimTemplates"], "the database is on a persistent volume"
    env = {e["name"]: e.get("value") for e in target.get("env", [])}
    assert env["POSTGRES_USER"] == url.username and env["POSTGRES_DB"] == url.path.lstrip("/")
    # The database's password file is the one fluxgate reads.
    volume, _, relative = volume_for(workload, target, env["POSTGRES_PASSWORD_FILE"])
    theirs, _, their_relative = volume_for(doc, container, config["store-password-file"])
    assert volume["secret"]["secretName"] == theirs["secret"]["secretName"]
    assert projected_key(volume["secret"], relative) == projected_key(theirs["secret"], their_relative)
    # TLS on, with the certificate and key from a Secret.
    assert "ssl=on" in target["args"]
    for setting in ("ssl_cert_file", "ssl_key_file"):
        file = next(a.split("=", 1)[1] for a in target["args"] if a.startswith(setting + "="))
        tls_volume, _, _ = volume_for(workload, target, file)
        assert "secret" in tls_volume, setting


# -- NetworkPolicy ---------------------------------------------------------------------


def policies_for(docs: list[dict], workload: dict) -> list[dict]:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return [d for d in docs if d["kind"] == "NetworkPolicy" and labels_match(d["spec"]["podSelector"], labels)]


def test_network_policy_admits_only_fluxgate_into_the_database_pod(app):
    statefulset = find(app, "StatefulSet", "influxdb")
    policies = policies_for(app, statefulset)
    assert policies, "no NetworkPolicy selects the database pod"
    proxy = next((d, c, p) for d, c, cmd, p in fluxgate_containers(app) if cmd == "proxy" and d is statefulset)
    config = tomllib.loads(config_toml(app, *proxy))
    allowed = {host_port(config["listen"])[1], host_port(config["admin-listen"])[1]}
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            assert ports, f"{policy['metadata']['name']}: an ingress rule without ports admits every port"
            assert ports <= allowed, f"{policy['metadata']['name']}: admits {ports - allowed}"
    # The admin port (metrics) is not open to everyone.
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if host_port(config["admin-listen"])[1] in {p["port"] for p in rule["ports"]}:
                assert rule.get("from"), "the admin port is open to every source"


def test_network_policy_lets_only_proxies_reach_the_token_service(app):
    authz = find(app, "Deployment", "fluxgate-authz")
    policies = policies_for(app, authz)
    assert policies, "no NetworkPolicy selects the token service"
    grpc = named_port(authz["spec"]["template"]["spec"]["containers"][0], "grpc")
    proxy_pods = [d["spec"]["template"]["metadata"]["labels"]
                  for d, _, cmd, _ in fluxgate_containers(app) if cmd == "proxy"]
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            assert ports, "an ingress rule without ports"
            if grpc not in ports:
                continue
            sources = rule.get("from")
            assert sources, "the token service port is open to every source"
            for source in sources:
                assert "ipBlock" not in source and "namespaceSelector" not in source
                assert source["podSelector"].get("matchLabels"), "empty podSelector = every pod"
                assert all(labels_match(source["podSelector"], labels) for labels in proxy_pods)
        # The token service connects to its PostgreSQL only (and DNS).
        assert "Egress" in policy["spec"]["policyTypes"]
        postgres = find(app, "StatefulSet", "fluxgate-postgres")
        postgres_labels = postgres["spec"]["template"]["metadata"]["labels"]
        for rule in policy["spec"]["egress"]:
            ports = {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}
            assert rule.get("to"), "an egress rule to everywhere"
            if ports == {(5432, "TCP")}:
                assert all(labels_match(t["podSelector"], postgres_labels) for t in rule["to"])
            else:
                assert {p for p, _ in ports} == {53}, f"egress beyond PostgreSQL and DNS: {rule}"

    # And the proxies' own egress policy lets them reach it.
    statefulset = find(app, "StatefulSet", "influxdb")
    authz_labels = authz["spec"]["template"]["metadata"]["labels"]
    egress_ok = any(
        grpc in {p["port"] for p in rule.get("ports", [])}
        and any(labels_match(t.get("podSelector", {}), authz_labels) for t in rule.get("to", []))
        for policy in policies_for(app, statefulset)
        for rule in policy["spec"].get("egress", [])
    )
    assert egress_ok, "the proxy pod may not connect to the token service"


def test_network_policy_lets_only_the_token_service_reach_postgres(app):
    postgres = find(app, "StatefulSet", "fluxgate-postgres")
    policies = policies_for(app, postgres)
    assert policies, "no NetworkPolicy selects PostgreSQL"
    authz_labels = find(app, "Deployment", "fluxgate-authz")["spec"]["template"]["metadata"]["labels"]
    port = named_port(pod_spec(postgres)["containers"][0], "postgres")
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            assert {p["port"] for p in rule["ports"]} == {port}
            assert rule.get("from"), "PostgreSQL open to every source"
            for source in rule["from"]:
                assert "ipBlock" not in source and "namespaceSelector" not in source
                assert labels_match(source["podSelector"], authz_labels)
        assert "Egress" in policy["spec"]["policyTypes"] and policy["spec"].get("egress") == []


# -- pod hardening -------------------------------------------------------------------------


def test_pods_meet_the_restricted_pod_security_standard(app):
    for doc in workloads(app):
        name = doc["metadata"]["name"]
        spec = pod_spec(doc)
        pod_sc = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, name
        assert spec.get("enableServiceLinks") is False, f"{name}: service links inject *_PORT variables"
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= {"configMap", "secret", "emptyDir", "persistentVolumeClaim",
                                               "projected", "downwardAPI"}, f"{name}: volume {volume}"
        for container in all_containers(spec):
            where = f"{name}/{container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert not sc.get("privileged"), where
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{where}: requests"
            assert "memory" in resources.get("limits", {}), f"{where}: memory limit"
            _, tag = split_image(container["image"])
            assert tag and tag != "latest", f"{where}: pin the image tag"
            for mount in container.get("volumeMounts", []):
                volume = next(v for v in pod_volumes(doc) if v["name"] == mount["name"])
                if "secret" in volume or "configMap" in volume:
                    assert mount.get("readOnly") is True, f"{where}: {mount['name']} writable"
            assert "envFrom" not in container, f"{where}: secrets come as files, not environment"
            for env in container.get("env", []):
                assert "secretKeyRef" not in env.get("valueFrom", {}), f"{where}: secret in an env var"


def test_secrets_are_placeholders_only(app):
    secrets = [d for d in app if d["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        assert "data" not in secret, "base64 `data:` hides what is in it: use stringData placeholders"
        for key, value in secret["stringData"].items():
            assert value.startswith("REPLACE-ME"), f"{secret['metadata']['name']}/{key} is not a placeholder"
            assert "-----BEGIN" not in value


def test_every_referenced_configmap_and_secret_exists(app):
    for doc in workloads(app):
        for volume in pod_spec(doc).get("volumes", []):
            if "secret" in volume:
                secret = find(app, "Secret", volume["secret"]["secretName"])
                keys = set(secret.get("stringData", {}))
                for item in volume["secret"].get("items", []):
                    assert item["key"] in keys
            if "configMap" in volume:
                configmap = find(app, "ConfigMap", volume["configMap"]["name"])
                for item in volume["configMap"].get("items", []):
                    assert item["key"] in configmap["data"]


# -- the documented first-management-token command ---------------------------------------


def readme_command(marker: str) -> list[str]:
    """The command after ``--`` of the deploy/README.md line containing ``marker``."""
    for line in (DEPLOY / "README.md").read_text().splitlines():
        if marker in line:
            argv = shlex.split(line.strip())
            return argv[argv.index("--") + 1:]
    raise AssertionError(f"deploy/README.md has no line with {marker!r}")


def test_first_management_token_commands_work_in_a_token_service_pod(app, fluxgate_bin, tmp_path, pki, postgres):
    """deploy/README.md's `fluxgate authz bootstrap` and `fluxgate management
    create`, as `kubectl exec` runs them in a token-service pod, against
    `fluxgate authz` started with the Deployment's args and the ConfigMap's
    authz.toml (mutual TLS on) over a real PostgreSQL (TLS verify-full,
    password file): the pod's paths moved under a temporary root, the
    Secrets' files made by a test CA, the database's host moved to the test
    cluster."""
    deployment = find(app, "Deployment", "fluxgate-authz")
    container = pod_spec(deployment)["containers"][0]
    args = container["args"]
    config_path = args[args.index("--config") + 1]
    config = tomllib.loads(config_toml(app, deployment, container, config_path))
    pod_root = tmp_path / "pod"

    def local(path: str) -> str:
        return str(pod_root / path.lstrip("/"))

    def secret_file(path: str, content: bytes) -> None:
        file = Path(local(path))
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content)
        file.chmod(0o440)

    # The Secret volumes' files, as the pod sees them.
    for key, value in config.items():
        if isinstance(value, str) and value.startswith("/") and key != "data-dir":
            if key == "store-password-file":
                secret_file(value, postgres.password.encode() + b"\n")
            else:
                secret_file(value, pki.pem_for(Path(value).name))
    # The store: the same URL, the test cluster's address, the CA file moved.
    store = urlsplit(config["store"])
    database = store.path.lstrip("/")
    postgres.sql("postgres", f"CREATE DATABASE {database}")
    root_cert = parse_qs(store.query)["sslrootcert"][0]
    secret_file(root_cert, pki.ca_pem)
    url = config["store"].replace(f"@{store.hostname}:{store.port}/", f"@localhost:{postgres.port}/")
    url = url.replace(f"sslrootcert={root_cert}", f"sslrootcert={local(root_cert)}")
    port, admin = free_ports(2)
    config.update({
        "listen": f"{LOOPBACK}:{port}",
        "admin-listen": f"{LOOPBACK}:{admin}",
        **{k: local(v) for k, v in config.items() if isinstance(v, str) and v.startswith("/")},
        "store": url,
    })
    Path(config["data-dir"]).mkdir(parents=True)
    rewritten = Path(local(config_path))
    rewritten.parent.mkdir(parents=True, exist_ok=True)
    rewritten.write_text("".join(f'{k} = "{v}"\n' for k, v in config.items()))
    argv = [str(fluxgate_bin), *args]
    argv[argv.index("--config") + 1] = str(rewritten)

    def in_pod(command: list[str]) -> subprocess.CompletedProcess:
        assert command[0] == "fluxgate"
        cli = [str(fluxgate_bin)]
        for arg in command[1:]:
            if arg.startswith("/"):
                arg = local(arg)
            cli.append(arg.replace("https://localhost:8090", f"https://localhost:{port}"))
        return subprocess.run(cli, capture_output=True, text=True, timeout=60, env=clean_env())

    with ManagedProcess(argv, name="fluxgate-authz", env=clean_env(RUST_LOG="info")) as authz:
        authz.wait_for_http(f"http://{LOOPBACK}:{admin}/readyz", statuses=(200,), timeout=30)
        # A replica wrote the first-start token into its own data directory.
        assert Path(config["data-dir"], "bootstrap-management-token").exists()

        bootstrap = readme_command('exec "$POD" -- fluxgate authz bootstrap')
        out = in_pod(bootstrap)
        assert out.returncode == 0, f"{' '.join(bootstrap)}:\n{out.stderr}\n{authz.log_text()[-3000:]}"
        minted = Path(local(bootstrap[bootstrap.index("--out") + 1]))
        assert minted.stat().st_mode & 0o777 == 0o600
        assert minted.read_text().strip() not in out.stdout + out.stderr

        command = readme_command('exec "$POD" -- fluxgate management create')
        assert any(a.startswith("https://localhost:") for a in command), "the command does not use TLS"
        assert minted.name in " ".join(command), "it uses the minted token"
        out = in_pod(command)
        assert out.returncode == 0, f"{' '.join(command)}:\n{out.stderr}\n{authz.log_text()[-3000:]}"
        created = json.loads(out.stdout)
        assert created["kind"] == "management" and created["token"]
        assert postgres.password not in authz.log_text()


def test_the_base_carries_no_secret():
    """Secrets come from the user (or the example overlay's placeholders):
    applying the base can never overwrite a real one."""
    assert [d["metadata"]["name"] for d in render(BASE) if d["kind"] == "Secret"] == []
