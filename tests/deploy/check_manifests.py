#!/usr/bin/env python3
"""Checks the deployment files in deploy/: the Kubernetes manifests
(deploy/kubernetes/*.yaml) and the container image (deploy/Dockerfile).

- Every manifest document is validated against the Kubernetes 1.33 schemas
  (kubernetes-validate, strict: unknown fields are errors). Custom resources
  without a bundled schema (ServiceMonitor) get structural checks instead.
- The failway configuration embedded in each ConfigMap is written to a temp
  file and run through `failway check --offline` (binary from $FAILWAY_BIN, default
  target/debug/failway), which must exit 0 without warnings. The files the
  configuration names (token, TLS pair) do not exist here on purpose:
  `failway check --offline` validates the configuration, not the pod's files.
- The pods' properties that make failway work there: the native sidecar, the
  probes on the probe listener, the termination grace period against
  proxy.shutdown_grace, non-root and read-only, every file the configuration
  names mounted from the right kind of volume, and for the gateway the
  replicas, PodDisruptionBudget, Service and ServiceMonitor.
- Failback: a configuration without [fleet] must set failback = "manual"
  (its instances decide alone and could split), in each [[service]] too. The fleet manifest
  (fleet.yaml) must have [fleet] with etcd endpoints every pod can reach,
  a per-service key, a per-pod instance ID ($POD_NAME from the downward
  API) and a quorum its replicas can meet.
- The Dockerfile's structure: multi-stage, locked release build, non-root
  numeric USER, and the `failway run --config /etc/failway/failway.toml`
  command.

Needs Python 3.11+ (tomllib) and tests/deploy/requirements.txt. Starts no
server and needs no cluster or network. Exits 1 listing every problem found.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    sys.exit("check_manifests.py needs Python 3.11 or newer (tomllib)")

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.33"
CONFIG_DIR = "/etc/failway"
CONFIG_PATH = f"{CONFIG_DIR}/failway.toml"
RUN_COMMAND = ["run", "--config", CONFIG_PATH]
PROBE_PORT = 9902

problems: list[str] = []


def problem(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


# --- small helpers -----------------------------------------------------------

_UNITS = {
    "ns": 1e-9, "nsec": 1e-9, "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}


def parse_duration(text: str) -> float:
    """Seconds in a humantime duration such as "25s", "1m 30s" or "500ms"."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text.strip().lower())
    joined = "".join(n + u for n, u in parts)
    if not parts or joined != re.sub(r"\s+", "", text.strip().lower()):
        raise ValueError(f"not a duration: {text!r}")
    total = 0.0
    for number, unit in parts:
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} in {text!r}")
        total += float(number) * _UNITS[unit]
    return total


def socket_addr(text: str) -> tuple[ipaddress._BaseAddress, int]:
    host, _, port = text.rpartition(":")
    return ipaddress.ip_address(host.strip("[]")), int(port)


def under(path: str, mount: str) -> bool:
    return PurePosixPath(path).is_relative_to(PurePosixPath(mount))


def resolve_port(port, container: dict):
    """A probe's or Service's port (number or name) as a number, or None."""
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def kn(doc: dict) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


# --- schema validation ---------------------------------------------------------


def check_service_monitor(where: str, doc: dict) -> None:
    """Structural checks for the Prometheus Operator's ServiceMonitor (a CRD,
    so kubernetes-validate has no schema for it)."""
    if doc.get("apiVersion") != "monitoring.coreos.com/v1":
        problem(where, f"apiVersion must be monitoring.coreos.com/v1, got {doc.get('apiVersion')!r}")
    if not (doc.get("metadata") or {}).get("name"):
        problem(where, "metadata.name is missing")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        problem(where, "spec is missing")
        return
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        problem(where, "spec.selector needs matchLabels or matchExpressions")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        problem(where, "spec.endpoints must be a non-empty list")
        return
    for i, ep in enumerate(endpoints):
        if not isinstance(ep, dict) or not isinstance(ep.get("port"), str) or not ep["port"]:
            problem(where, f"spec.endpoints[{i}].port must be a port name")
        unknown = set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels",
                             "relabelings", "metricRelabelings", "tlsConfig", "bearerTokenSecret"}
        if unknown:
            problem(where, f"spec.endpoints[{i}]: unexpected fields {sorted(unknown)}")


def validate_schema(where: str, doc: dict) -> None:
    if doc.get("kind") == "ServiceMonitor":
        check_service_monitor(where, doc)
        return
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        problem(where, f"Kubernetes {KUBERNETES_VERSION} schema: {path}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError as e:
        problem(where, e.message)


# --- failway configuration -----------------------------------------------------


def failway_check(where: str, text: str) -> dict | None:
    """Runs `failway check` on an embedded configuration; returns the
    effective configuration it prints, parsed, or None on failure."""
    binary = Path(os.environ.get("FAILWAY_BIN", "target/debug/failway"))
    if not binary.is_absolute():
        binary = ROOT / binary
    if not binary.is_file():
        problem(where, f"failway binary not found at {binary} (build it, or set FAILWAY_BIN)")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "failway.toml"
        path.write_text(text)
        try:
            run = subprocess.run([str(binary), "check", "--offline", "--config", str(path)],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            problem(where, f"cannot run {binary}: {e}")
            return None
    if run.returncode != 0:
        problem(where, f"`failway check` exited {run.returncode}:\n{run.stderr.strip()}")
        return None
    for line in run.stderr.splitlines():
        if line.startswith("warning:"):
            problem(where, f"`failway check` {line}")
    try:
        return tomllib.loads(run.stdout)
    except tomllib.TOMLDecodeError as e:
        problem(where, f"the effective configuration `failway check` printed is not TOML: {e}")
        return None


# --- pods ----------------------------------------------------------------------


def check_container_security(where: str, pod: dict, c: dict) -> None:
    pod_sc = pod.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")) or sc.get("runAsNonRoot") is False:
        problem(where, "runAsNonRoot must be true (pod or container securityContext)")
    for ctx, name in ((pod_sc, "pod"), (sc, "container")):
        if ctx.get("runAsUser") == 0:
            problem(where, f"{name} securityContext.runAsUser is 0 (root)")
    if sc.get("readOnlyRootFilesystem") is not True:
        problem(where, "securityContext.readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problem(where, "securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problem(where, "securityContext.capabilities.drop must contain ALL")
    if sc.get("privileged"):
        problem(where, "must not be privileged")


def check_probes(where: str, c: dict, probe_port: int | None) -> None:
    want = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/livez"}
    for name, path in want.items():
        probe = c.get(name)
        get = (probe or {}).get("httpGet")
        if not get:
            problem(where, f"{name} must be an httpGet probe on {path}")
            continue
        if get.get("path") != path:
            problem(where, f"{name} path must be {path}, got {get.get('path')!r}")
        port = resolve_port(get.get("port"), c)
        if port != PROBE_PORT:
            problem(where, f"{name} must use the probe listener's port {PROBE_PORT}, got {get.get('port')!r}")
        if probe_port is not None and port != probe_port:
            problem(where, f"{name} port {port} is not admin.probe_listen's port {probe_port}")


def container_command(c: dict) -> list[str]:
    """The argv the container runs, assuming the image's ENTRYPOINT is failway."""
    if c.get("command"):
        return list(c["command"]) + list(c.get("args") or [])
    return ["failway"] + list(c.get("args") or RUN_COMMAND)


def check_command(where: str, c: dict) -> None:
    argv = container_command(c)
    if not argv or PurePosixPath(argv[0]).name != "failway":
        problem(where, f"must run the failway binary, runs {argv!r}")
        return
    rest = argv[1:]
    if "run" not in rest:
        problem(where, f"must run `failway run`, runs {argv!r}")
    joined = " ".join(rest)
    if f"--config {CONFIG_PATH}" not in joined and f"--config={CONFIG_PATH}" not in joined:
        problem(where, f"must pass --config {CONFIG_PATH}, runs {argv!r}")


def mount_for(c: dict, path: str) -> dict | None:
    """The volume mount holding `path` (the deepest one, as in the container)."""
    best = None
    for m in c.get("volumeMounts") or []:
        if under(path, m.get("mountPath", "/nonexistent")):
            if best is None or len(m["mountPath"]) > len(best["mountPath"]):
                best = m
    return best


def check_file(where: str, pod: dict, c: dict, key: str, path: str, kind: str,
               secrets: dict, writable: bool = False) -> None:
    """`path`, named by config key `key`, must lie on a mounted volume of
    `kind` ("secret", "configMap", "emptyDir"); a Secret defined in the same
    file must hold the file's key."""
    if not PurePosixPath(path).is_absolute():
        path = f"{CONFIG_DIR}/{path}"
    mount = mount_for(c, path)
    if mount is None:
        problem(where, f"{key} = {path!r} is on no volume mount")
        return
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    volume = volumes.get(mount.get("name"))
    if volume is None:
        problem(where, f"volume mount {mount.get('name')!r} has no volume")
        return
    if kind not in volume:
        problem(where, f"{key} = {path!r} must come from a {kind} volume, "
                       f"volume {volume.get('name')!r} is {sorted(set(volume) - {'name'})}")
        return
    if writable and mount.get("readOnly"):
        problem(where, f"{key} = {path!r} must be writable, its mount is readOnly")
    if kind == "secret":
        name = volume["secret"].get("secretName")
        file_key = str(PurePosixPath(path).relative_to(mount["mountPath"]))
        secret = secrets.get(name)
        if secret is not None:
            keys = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
            if file_key not in keys:
                problem(where, f"{key} = {path!r}: Secret {name!r} has no key {file_key!r}")


def check_config_mount(where: str, pod: dict, c: dict, configmaps: dict) -> str | None:
    """The ConfigMap mounted at /etc/failway; returns its name."""
    mount = mount_for(c, CONFIG_PATH)
    if mount is None or mount.get("mountPath") != CONFIG_DIR:
        problem(where, f"the configuration must be mounted at {CONFIG_DIR}")
        return None
    volume = {v.get("name"): v for v in pod.get("volumes") or []}.get(mount.get("name")) or {}
    name = (volume.get("configMap") or {}).get("name")
    if name is None:
        problem(where, f"{CONFIG_DIR} must be a configMap volume")
        return None
    if name not in configmaps:
        problem(where, f"ConfigMap {name!r} is not defined in this file")
    elif "failway.toml" not in (configmaps[name].get("data") or {}):
        problem(where, f"ConfigMap {name!r} has no failway.toml")
    return name


def check_failway_pod(where: str, deployment: dict, c: dict, cfg: dict,
                      configmaps: dict, secrets: dict) -> None:
    pod = deployment["spec"]["template"]["spec"]
    check_container_security(where, pod, c)
    check_command(where, c)

    admin = cfg.get("admin", {})
    probe_port = None
    if "probe_listen" not in admin:
        problem(where, "admin.probe_listen must be set (kubelet probes the pod IP)")
    else:
        ip, probe_port = socket_addr(admin["probe_listen"])
        if ip.is_loopback:
            problem(where, f"admin.probe_listen {admin['probe_listen']} is loopback; kubelet cannot reach it")
    if "listen" in admin and not socket_addr(admin["listen"])[0].is_loopback:
        problem(where, f"admin.listen {admin['listen']} should stay on loopback (operator actions via kubectl exec)")
    check_probes(where, c, probe_port)

    # terminationGracePeriodSeconds must cover the preStop hook and the drain.
    grace = parse_duration(cfg.get("proxy", {}).get("shutdown_grace", "25s"))
    pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    if not tgps > grace + pre_stop:
        problem(where, f"terminationGracePeriodSeconds {tgps} must exceed preStop sleep {pre_stop}s "
                       f"+ proxy.shutdown_grace {grace:g}s")

    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(part) or {}):
                problem(where, f"resources.{part}.{r} must be set")

    check_config_mount(where, pod, c, configmaps)
    token = admin.get("token_file")
    if not token:
        problem(where, "admin.token_file must be set")
    else:
        check_file(where, pod, c, "admin.token_file", token, "secret", secrets)
    tls = cfg.get("proxy", {}).get("tls")
    if tls:
        for k in ("cert", "key"):
            check_file(where, pod, c, f"proxy.tls.{k}", tls[k], "secret", secrets)
    state = cfg.get("state", {}).get("path")
    if not state:
        problem(where, "state.path must be set (mode, deadline and latch survive restarts)")
    else:
        check_file(where, pod, c, "state.path", state, "emptyDir", secrets, writable=True)

    # Without [fleet] every instance decides alone, so failback is left to an
    # operator. With [fleet] failback happens once for the whole fleet, so
    # "safe" is allowed too (`failway check` has already validated the value).
    # Each [[service]] has its own failover engine and may set its own failback.
    if "fleet" not in cfg:
        for key, failback in failbacks(cfg):
            if failback != "manual":
                problem(where, f'{key} is {failback!r}; without [fleet] it must be "manual"')


def failbacks(cfg: dict) -> list[tuple[str, object]]:
    """(key, value) of failover.failback at the top level and in each
    [[service]] block of an effective configuration (the blocks print every
    key as it takes effect, inherited ones included)."""
    out = [("failover.failback", cfg.get("failover", {}).get("failback"))]
    for i, svc in enumerate(cfg.get("service") or []):
        out.append((f"service[{i}].failover.failback ({svc.get('name')})",
                     (svc.get("failover") or {}).get("failback")))
    return out


def failway_container(deployment: dict, sidecar: bool, where: str) -> dict | None:
    pod = deployment["spec"]["template"]["spec"]
    init = [c for c in pod.get("initContainers") or [] if c.get("name") == "failway"]
    main = [c for c in pod.get("containers") or [] if c.get("name") == "failway"]
    if sidecar:
        if main:
            problem(where, "failway must be a native sidecar (initContainers), not in containers")
        if not init:
            problem(where, "no initContainers entry named failway")
            return None
        if init[0].get("restartPolicy") != "Always":
            problem(where, "the failway init container needs restartPolicy: Always (native sidecar)")
        return init[0]
    if not main:
        problem(where, "no container named failway")
        return None
    return main[0]


# --- the three manifests ---------------------------------------------------------


def load_manifest(path: Path) -> list[dict]:
    rel = path.relative_to(ROOT)
    try:
        text = path.read_text()
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        problem(str(rel), f"cannot read: {e}")
        return []
    if "PRIVATE KEY" in text:
        problem(str(rel), "contains private key material")
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            problem(f"{rel} document {i + 1}", "not a Kubernetes object")
            continue
        validate_schema(f"{rel} {kn(doc)}", doc)
    return [d for d in docs if isinstance(d, dict)]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {(d.get("metadata") or {}).get("name"): d for d in docs if d.get("kind") == kind}


def configs(rel: str, docs: list[dict]) -> dict[str, dict]:
    """ConfigMap name -> effective configuration, for each ConfigMap holding
    a failway.toml that `failway check` accepts."""
    out = {}
    for name, cm in by_kind(docs, "ConfigMap").items():
        text = (cm.get("data") or {}).get("failway.toml")
        if text is None:
            continue
        eff = failway_check(f"{rel} ConfigMap/{name} failway.toml", text)
        if eff is not None:
            out[name] = eff
    return out


def one_deployment(rel: str, docs: list[dict]) -> dict | None:
    deployments = list(by_kind(docs, "Deployment").values())
    if len(deployments) != 1:
        problem(rel, f"expected one Deployment, found {len(deployments)}")
        return None
    d = deployments[0]
    labels = (d["spec"]["template"].get("metadata") or {}).get("labels") or {}
    if not matches((d["spec"].get("selector") or {}).get("matchLabels") or {}, labels):
        problem(f"{rel} {kn(d)}", "spec.selector.matchLabels does not match the pod template's labels")
    return d


def config_of(rel: str, deployment: dict, c: dict, cfgs: dict):
    pod = deployment["spec"]["template"]["spec"]
    mount = mount_for(c, CONFIG_PATH) or {}
    volume = {v.get("name"): v for v in pod.get("volumes") or []}.get(mount.get("name")) or {}
    name = (volume.get("configMap") or {}).get("name")
    if name not in cfgs:
        problem(rel, "the failway container's configuration did not pass `failway check`; "
                     "pod checks that need it are skipped")
        return None
    return cfgs[name]


def check_sidecar(path: Path) -> tuple[str, dict, dict, dict] | None:
    """Checks a sidecar manifest; returns (rel, deployment, failway
    container, effective configuration) when all of them were found."""
    rel = str(path.relative_to(ROOT))
    docs = load_manifest(path)
    cfgs = configs(rel, docs)
    deployment = one_deployment(rel, docs)
    if deployment is None:
        return None
    where = f"{rel} {kn(deployment)} failway"
    c = failway_container(deployment, sidecar=True, where=where)
    if c is None:
        return None
    cfg = config_of(rel, deployment, c, cfgs)
    if cfg is None:
        return None
    check_failway_pod(where, deployment, c, cfg, by_kind(docs, "ConfigMap"), by_kind(docs, "Secret"))

    listen = cfg.get("proxy", {}).get("listen", "")
    ip, port = socket_addr(listen)
    if not ip.is_loopback:
        problem(where, f"proxy.listen {listen} must be loopback for a sidecar")
    url = f"http://127.0.0.1:{port}"
    pod = deployment["spec"]["template"]["spec"]
    apps = pod.get("containers") or []
    if not any(e.get("value", "").rstrip("/") == url for a in apps for e in a.get("env") or []):
        problem(f"{rel} {kn(deployment)}", f"no application container has an env var pointing at {url}")

    ann = deployment["spec"]["template"].get("metadata", {}).get("annotations") or {}
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(PROBE_PORT):
        problem(f"{rel} {kn(deployment)}",
                f'pod annotations need prometheus.io/scrape: "true" and prometheus.io/port: "{PROBE_PORT}"')
    return rel, deployment, c, cfg


FLEET_KEY = re.compile(r"/failway/[A-Za-z0-9][A-Za-z0-9._-]*/mode")


def pod_name_env(c: dict) -> bool:
    """Whether the container gets POD_NAME from the downward API."""
    for e in c.get("env") or []:
        if e.get("name") == "POD_NAME":
            ref = ((e.get("valueFrom") or {}).get("fieldRef") or {})
            return ref.get("fieldPath") == "metadata.name"
    return False


def check_fleet(path: Path) -> None:
    """fleet.yaml: the sidecar checks, plus what makes the pods one fleet."""
    found = check_sidecar(path)
    if found is None:
        return
    rel, deployment, c, cfg = found
    dwhere = f"{rel} {kn(deployment)}"
    where = f"{dwhere} failway"
    secrets = by_kind(load_manifest(path), "Secret")
    pod = deployment["spec"]["template"]["spec"]
    fleet = cfg.get("fleet")
    if not isinstance(fleet, dict):
        problem(where, "the fleet manifest's configuration has no [fleet]")
        return

    replicas = deployment["spec"].get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 2:
        problem(dwhere, f"replicas must be 2 or more for a fleet, got {replicas!r}")

    if fleet.get("backend") != "etcd":
        problem(where, f"fleet.backend must be \"etcd\", got {fleet.get('backend')!r}")
    endpoints = fleet.get("endpoints") or []
    endpoints_file = fleet.get("endpoints_file")
    if not endpoints and not endpoints_file:
        problem(where, "fleet.endpoints or fleet.endpoints_file must name the etcd cluster's endpoints")
    if endpoints_file:
        check_file(where, pod, c, "fleet.endpoints_file",
                   endpoints_file, "secret", secrets)
    if fleet.get("password_file"):
        check_file(where, pod, c, "fleet.password_file",
                   fleet["password_file"], "secret", secrets)
    for k, v in (fleet.get("tls") or {}).items():
        if k != "server_name":
            check_file(where, pod, c, f"fleet.tls.{k}", v,
                       "secret", secrets)
    schemes = {str(e).partition("://")[0] for e in endpoints}
    if len(schemes) > 1:
        # failway refuses to start with mixed schemes; `failway check` does not see it.
        problem(where, f"fleet.endpoints mix schemes {sorted(schemes)}; use http or https for all")
    for e in endpoints:
        host = str(e).partition("://")[2].rpartition(":")[0].strip("[]")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if loopback:
            problem(where, f"fleet.endpoints {e!r} is the pod's loopback; every pod must reach the same etcd")

    key = fleet.get("key", "")
    if not FLEET_KEY.fullmatch(key):
        problem(where, f'fleet.key {key!r} must be "/failway/<service>/mode"')

    try:
        ttl = parse_duration(fleet.get("lease_ttl", ""))
    except ValueError as e:
        problem(where, f"fleet.lease_ttl: {e}")
    else:
        if not 2 <= ttl <= 60:
            problem(where, f"fleet.lease_ttl is {ttl:g}s; writes stop within it after etcd is lost, "
                           "keep it between 2s and 60s")

    quorum = fleet.get("failover_quorum")
    if not isinstance(quorum, int) or quorum < 1:
        problem(where, f"fleet.failover_quorum must be at least 1, got {quorum!r}")
    elif isinstance(replicas, int) and quorum > replicas:
        problem(where, f"fleet.failover_quorum {quorum} exceeds replicas {replicas}: "
                       "the fleet could never fail over on its own")

    # One ConfigMap serves every pod, so a fixed instance_id would be shared by
    # all of them and their reports would overwrite each other.
    if "instance_id" in fleet:
        problem(where, "fleet.instance_id must stay unset: every pod shares the ConfigMap "
                       "and needs its own ID ($POD_NAME)")
    if not pod_name_env(c):
        problem(where, "needs env POD_NAME from fieldRef metadata.name (the fleet instance ID)")

    for key, failback in failbacks(cfg):
        if failback not in ("safe", "manual"):
            problem(where, f'{key} must be "safe" or "manual", got {failback!r}')


def check_gateway(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    docs = load_manifest(path)
    cfgs = configs(rel, docs)
    deployment = one_deployment(rel, docs)
    if deployment is None:
        return
    dwhere = f"{rel} {kn(deployment)}"
    where = f"{dwhere} failway"
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"].get("metadata", {}).get("labels") or {}
    if spec.get("replicas") != 2:
        problem(dwhere, f"replicas must be 2, got {spec.get('replicas')!r}")
    anti = ((pod.get("affinity") or {}).get("podAntiAffinity") or {})
    terms = anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []
    if not any(t.get("podAffinityTerm", {}).get("topologyKey") == "kubernetes.io/hostname"
               and matches(t["podAffinityTerm"].get("labelSelector", {}).get("matchLabels") or {}, pod_labels)
               for t in terms):
        problem(dwhere, "needs a preferred podAntiAffinity across kubernetes.io/hostname selecting its own pods")

    c = failway_container(deployment, sidecar=False, where=where)
    if c is None:
        return
    cfg = config_of(rel, deployment, c, cfgs)
    if cfg is None:
        return
    check_failway_pod(where, deployment, c, cfg, by_kind(docs, "ConfigMap"), by_kind(docs, "Secret"))

    proxy = cfg.get("proxy", {})
    if not proxy.get("tls"):
        problem(where, "proxy.tls must be set for the gateway")
    ip, listen_port = socket_addr(proxy.get("listen", "127.0.0.1:0"))
    if ip.is_loopback:
        problem(where, f"proxy.listen {proxy.get('listen')} is loopback; the Service cannot reach it")

    services = list(by_kind(docs, "Service").values())
    if len(services) != 1:
        problem(rel, f"expected one Service, found {len(services)}")
    metrics_names: set[str] = set()
    for svc in services:
        swhere = f"{rel} {kn(svc)}"
        sspec = svc.get("spec") or {}
        if not matches(sspec.get("selector") or {}, pod_labels):
            problem(swhere, "selector does not select the Deployment's pods")
        targets = {p.get("port"): resolve_port(p.get("targetPort", p.get("port")), c)
                   for p in sspec.get("ports") or []}
        if targets.get(443) != listen_port:
            problem(swhere, f"port 443 must reach proxy.listen's port {listen_port}, reaches {targets.get(443)!r}")
        if PROBE_PORT not in targets.values():
            problem(swhere, f"needs a metrics port reaching {PROBE_PORT}")
        metrics_names |= {p.get("name") for p in sspec.get("ports") or []
                          if resolve_port(p.get("targetPort", p.get("port")), c) == PROBE_PORT}

    monitors = list(by_kind(docs, "ServiceMonitor").values())
    if len(monitors) != 1:
        problem(rel, f"expected one ServiceMonitor, found {len(monitors)}")
    for sm in monitors:
        mwhere = f"{rel} {kn(sm)}"
        msel = ((sm.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not any(matches(msel, (svc.get("metadata") or {}).get("labels") or {}) for svc in services):
            problem(mwhere, "selector selects no Service in this file")
        ports = [ep.get("port") for ep in (sm.get("spec") or {}).get("endpoints") or []]
        if not any(p in metrics_names for p in ports):
            problem(mwhere, f"endpoints {ports} name no Service port reaching {PROBE_PORT}")

    pdbs = list(by_kind(docs, "PodDisruptionBudget").values())
    if len(pdbs) != 1:
        problem(rel, f"expected one PodDisruptionBudget, found {len(pdbs)}")
    for pdb in pdbs:
        pspec = pdb.get("spec") or {}
        if pspec.get("minAvailable") != 1:
            problem(f"{rel} {kn(pdb)}", f"minAvailable must be 1, got {pspec.get('minAvailable')!r}")
        if not matches((pspec.get("selector") or {}).get("matchLabels") or {}, pod_labels):
            problem(f"{rel} {kn(pdb)}", "selector does not select the Deployment's pods")

    tls_secrets = [d for d in by_kind(docs, "Secret").values() if d.get("type") == "kubernetes.io/tls"]
    for s in tls_secrets:
        if any((s.get("data") or {}).values()) or any((s.get("stringData") or {}).values()):
            problem(f"{rel} {kn(s)}", "a TLS Secret in the manifest must not carry data")


# --- Dockerfile ----------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments
    and parser directives dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current:
            word, _, rest = current.partition(" ")
            out.append((word.upper(), rest.strip()))
        current = ""
    if current:
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def exec_form(where: str, name: str, args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problem(where, f"{name} must be in exec form (a JSON array), got {args!r}")
        return None
    return value


def check_dockerfile(path: Path) -> None:
    where = str(path.relative_to(ROOT))
    try:
        instructions = dockerfile_instructions(path.read_text())
    except OSError as e:
        problem(where, f"cannot read: {e}")
        return
    stages: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    if len(stages) < 2:
        problem(where, f"must be a multi-stage build (at least 2 FROM lines), has {len(stages)}")
        return
    first_from = stages[0][0][1].split()[0]
    if not re.fullmatch(r"rust:[^\s:]*-bookworm", first_from):
        problem(where, f"the build stage must start FROM rust:<version>-bookworm, got {first_from!r}")
    builds = [args for stage in stages[:-1] for word, args in stage if word == "RUN"
              and re.search(r"\bcargo build\b", args)]
    if not any(re.search(r"cargo build\b[^&;|]*--release", b) and re.search(r"cargo build\b[^&;|]*--locked", b)
               for b in builds):
        problem(where, "no build stage runs `cargo build --release --locked`")
    # The build needs nothing the base image lacks: no package manager, no protoc.
    for stage in stages[:-1]:
        for word, args in stage:
            if word == "RUN" and re.search(r"\b(apt-get|apt|apk|dnf|yum|protoc)\b", args):
                problem(where, f"a build stage installs or runs a system tool: {args!r}")
    # The image ships a stripped binary, stripped by cargo itself.
    if not any("CARGO_PROFILE_RELEASE_STRIP=symbols" in b for b in builds):
        problem(where, "the release build does not strip the binary (CARGO_PROFILE_RELEASE_STRIP=symbols)")

    final = stages[-1]
    final_from = final[0][1].split()[0]
    if not final_from.startswith("gcr.io/distroless/cc-debian12"):
        problem(where, f"the final stage must be distroless/cc-debian12 (what deploy/check.sh's ldd check allows), got {final_from!r}")
    users = [args for word, args in final if word == "USER"]
    if not users:
        problem(where, "the final stage sets no USER")
    else:
        user = users[-1].split(":")[0]
        if not user.isdigit():
            problem(where, f"USER must be numeric (kubelet's runAsNonRoot check), got {users[-1]!r}")
        elif int(user) == 0:
            problem(where, "USER is root (0)")

    entry = [args for word, args in final if word == "ENTRYPOINT"]
    cmd = [args for word, args in final if word == "CMD"]
    argv: list[str] = []
    if entry:
        argv += exec_form(where, "ENTRYPOINT", entry[-1]) or []
    if cmd:
        argv += exec_form(where, "CMD", cmd[-1]) or []
    if not argv or PurePosixPath(argv[0]).name != "failway" or argv[1:] != RUN_COMMAND:
        problem(where, f"ENTRYPOINT + CMD must run failway {' '.join(RUN_COMMAND)}, run {argv!r}")

    exposed = {p.split("/")[0] for word, args in final if word == "EXPOSE" for p in args.split()}
    for port in ("8080", "8443", "9901", "9902"):
        if port not in exposed:
            problem(where, f"the final stage does not EXPOSE {port}")

    ignore = ROOT / ".dockerignore"
    try:
        entries = {line.strip().rstrip("/") for line in ignore.read_text().splitlines()}
    except OSError:
        problem(".dockerignore", "missing at the repository root")
    else:
        for entry_ in ("target", ".git"):
            if entry_ not in entries:
                problem(".dockerignore", f"does not exclude {entry_}")


def main() -> int:
    k8s = DEPLOY / "kubernetes"
    check_sidecar(k8s / "sidecar.yaml")
    check_gateway(k8s / "gateway.yaml")
    check_fleet(k8s / "fleet.yaml")
    check_dockerfile(DEPLOY / "Dockerfile")
    if problems:
        print(f"check_manifests.py: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print("check_manifests.py: deploy/kubernetes/sidecar.yaml, deploy/kubernetes/gateway.yaml, "
          "deploy/kubernetes/fleet.yaml and deploy/Dockerfile pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
