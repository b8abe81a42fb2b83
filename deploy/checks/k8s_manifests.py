"""Render, validate and policy-check the Kubernetes manifests (deploy/k8s), offline.

Each overlay is rendered with `kubectl kustomize` in a copy of deploy/k8s, with throwaway
Secrets (overlays/dev/make-secrets.sh; overlays/managed/secrets.example). Then:
  - the built-in kinds against the Kubernetes schemas (kubernetes-validate, strict);
  - KEDA's and the Prometheus operator's objects against deploy/k8s/schemas/;
  - the policy: every container has requests and limits, a liveness and a readiness probe
    (a worker a startup probe too), runs as non-root on a read-only root filesystem with every
    capability dropped and no privilege escalation, and names a pinned image (a tag that is not
    `latest`, or a digest); a worker's terminationGracePeriodSeconds covers ML_TASK_TIME_LIMIT_S;
    no ConfigMap holds a secret; every worker Deployment has a ScaledObject of at least one
    replica on its model's queue, on metrics our code exports; every Service selects a
    workload's pods and targets a port they declare;
  - the copies stay copies: base/prometheusrule.yaml holds deploy/prometheus/alerts.yml's rules
    (`--write-rules` rewrites it), stores/files/ deploy/redis's and deploy/rabbitmq's files.

Usage:
    python deploy/checks/k8s_manifests.py [--kubernetes-version 1.32.0] OVERLAY...
    python deploy/checks/k8s_manifests.py --write-rules
Exits 1 and prints one line per problem.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
RULES = K8S / "base" / "prometheusrule.yaml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
COPIES = {
    "stores/files/redis.conf": "deploy/redis/redis.conf",
    "stores/files/start.sh": "deploy/redis/start.sh",
    "stores/files/20-mlprod.conf": "deploy/rabbitmq/20-mlprod.conf",
}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
DEFAULT_TASK_TIME_LIMIT_S = 90.0  # ml_common.settings: task_time_limit_s
SECRET_KEY_RE = re.compile(r"PASSWORD|PASS$|SECRET|_KEY$|TOKEN|USERS$", re.IGNORECASE)
CREDENTIALS_IN_URL_RE = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
Doc = dict[str, Any]


def render(overlay: Path, work: Path) -> list[Doc]:
    """The overlay rendered by `kubectl kustomize` in a copy of deploy/k8s with dummy Secrets."""
    copy = work / "k8s"
    if not copy.exists():
        shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets"))
        subprocess.run(
            ["sh", str(copy / "overlays/dev/make-secrets.sh")], check=True, capture_output=True
        )
        example = copy / "overlays/managed/secrets.example"
        shutil.copytree(example, example.with_name("secrets"))
    target = copy / overlay.resolve().relative_to(K8S)
    out = subprocess.run(
        ["kubectl", "kustomize", str(target)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def name_of(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def validate_schemas(docs: Iterable[Doc], version: str) -> Iterator[str]:
    """Built-in kinds against Kubernetes' schemas; custom resources against ours."""
    import jsonschema
    import kubernetes_validate

    for doc in docs:
        group = doc.get("apiVersion", "").partition("/")[0]
        if "." in group and not group.endswith(".k8s.io"):
            path = SCHEMAS / f"{doc['kind'].lower()}_{doc['apiVersion'].replace('/', '_')}.json"
            if not path.exists():
                yield f"{name_of(doc)}: no schema for {doc['apiVersion']} in {SCHEMAS}"
                continue
            schema = json.loads(path.read_text())
            for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
                yield f"{name_of(doc)}: {'/'.join(map(str, error.path))}: {error.message}"
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            yield f"{name_of(doc)}: {'/'.join(map(str, exc.path))}: {exc.message}"
        except kubernetes_validate.SchemaNotFoundError:
            yield f"{name_of(doc)}: no Kubernetes {version} schema for {doc.get('apiVersion')}"


def pod_spec(doc: Doc) -> Doc | None:
    if doc.get("kind") == "Pod":
        return doc.get("spec") or {}
    if doc.get("kind") in WORKLOADS:
        return doc.get("spec", {}).get("template", {}).get("spec") or {}
    return None


def is_worker(container: Doc) -> bool:
    return "worker" in (container.get("command") or []) + (container.get("args") or [])


def image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image} has no tag"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image} is `latest`"
    return None


def container_problems(container: Doc, pod: Doc, init: bool) -> Iterator[str]:
    """What the policy finds wrong with one container of a pod spec."""
    resources = container.get("resources") or {}
    for part in ("requests", "limits"):
        for what in ("cpu", "memory"):
            if what not in (resources.get(part) or {}):
                yield f"no {what} {part}"
    if not init:
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in container:
                yield f"no {probe}"
        if is_worker(container) and "startupProbe" not in container:
            yield "a worker without a startupProbe (its model load)"
    own = container.get("securityContext") or {}
    pod_level = pod.get("securityContext") or {}
    if not own.get("runAsNonRoot", pod_level.get("runAsNonRoot")):
        yield "runAsNonRoot is not true"
    if own.get("runAsUser", pod_level.get("runAsUser")) == 0:
        yield "runAsUser is 0"
    if own.get("readOnlyRootFilesystem") is not True:
        yield "readOnlyRootFilesystem is not true"
    if own.get("allowPrivilegeEscalation") is not False:
        yield "allowPrivilegeEscalation is not false"
    if "ALL" not in ((own.get("capabilities") or {}).get("drop") or []):
        yield "capabilities do not drop ALL"
    if (own.get("capabilities") or {}).get("add"):
        yield "capabilities are added"
    problem = image_problem(str(container.get("image", "")))
    if problem:
        yield problem


def config_values(docs: Iterable[Doc]) -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"
    }


def task_time_limit(container: Doc, configs: dict[str, dict[str, str]]) -> float:
    """ML_TASK_TIME_LIMIT_S as the container sees it (env over envFrom ConfigMaps)."""
    value: str | None = None
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        value = configs.get(ref or "", {}).get("ML_TASK_TIME_LIMIT_S", value)
    for var in container.get("env") or []:
        if var.get("name") == "ML_TASK_TIME_LIMIT_S" and "value" in var:
            value = var["value"]
    return float(value) if value is not None else DEFAULT_TASK_TIME_LIMIT_S


def worker_queues(container: Doc, configs: dict[str, dict[str, str]]) -> list[str]:
    models = next(
        (v.get("value", "") for v in container.get("env") or [] if v.get("name") == "ML_MODELS"),
        "",
    )
    return [f"detections.{m.strip()}" for m in models.split(",") if m.strip()]


def scaled_queues(docs: Iterable[Doc]) -> dict[str, set[str]]:
    """Each ScaledObject's target and the queues its triggers watch (min replicas >= 1)."""
    found: dict[str, set[str]] = {}
    for doc in docs:
        if doc.get("kind") != "ScaledObject" or doc["spec"].get("minReplicaCount", 0) < 1:
            continue
        text = json.dumps(doc["spec"].get("triggers", []))
        queues = set(re.findall(r"detections\.[a-z0-9-]+", text))
        found[doc["spec"]["scaleTargetRef"]["name"]] = queues
    return found


def policy(docs: list[Doc]) -> Iterator[str]:
    """Every problem the policy finds in the rendered manifests, one line each."""
    configs = config_values(docs)
    scaled = scaled_queues(docs)
    for doc in docs:
        if doc.get("kind") == "ConfigMap":
            for key, value in (doc.get("data") or {}).items():
                if SECRET_KEY_RE.search(key) or CREDENTIALS_IN_URL_RE.search(str(value)):
                    yield f"{name_of(doc)}: {key} looks like a secret: put it in a Secret"
        pod = pod_spec(doc)
        if pod is None:
            continue
        for init, key in ((True, "initContainers"), (False, "containers")):
            for container in pod.get(key) or []:
                where = f"{name_of(doc)} container {container.get('name')}"
                for problem in container_problems(container, pod, init):
                    yield f"{where}: {problem}"
                if init or not is_worker(container):
                    continue
                limit = task_time_limit(container, configs)
                grace = pod.get("terminationGracePeriodSeconds", 30)
                if grace < limit:
                    yield f"{where}: terminationGracePeriodSeconds {grace} < task limit {limit}"
                queues = set(worker_queues(container, configs))
                if doc["kind"] == "Deployment" and not queues <= scaled.get(
                    doc["metadata"]["name"], set()
                ):
                    yield f"{where}: no ScaledObject (min >= 1) on {sorted(queues)}"


def service_problems(docs: list[Doc]) -> Iterator[str]:
    """Each Service selects a workload's pods and targets a port they declare (podman runs no
    Service: scripts/k8s_ci.sh names each pod after its workload instead)."""
    pods = [(pod_labels(d), pod_spec(d) or {}) for d in docs if pod_spec(d) is not None]
    for doc in docs:
        if doc.get("kind") != "Service":
            continue
        selector = doc["spec"].get("selector") or {}
        chosen = [spec for labels, spec in pods if selector.items() <= labels.items()]
        if not selector or not chosen:
            yield f"{name_of(doc)}: its selector {selector} matches no workload's pods"
            continue
        declared = {
            p.get(k)
            for spec in chosen
            for c in spec.get("containers") or []
            for p in c.get("ports") or []
            for k in ("name", "containerPort")
        }
        for port in doc["spec"].get("ports") or []:
            if port.get("targetPort", port.get("port")) not in declared:
                yield f"{name_of(doc)}: targetPort {port.get('targetPort')} is no container port"


def pod_labels(doc: Doc) -> dict[str, str]:
    if doc.get("kind") == "Pod":
        return dict(doc.get("metadata", {}).get("labels") or {})
    return dict(doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {})


def metric_problems(docs: list[Doc]) -> Iterator[str]:
    """Every mlprod_* metric a ScaledObject scales on is one our code exports."""
    sources = "".join(p.read_text() for p in ROOT.glob("ml-*/**/*.py"))
    for doc in docs:
        if doc.get("kind") != "ScaledObject":
            continue
        for metric in set(re.findall(r"mlprod_[a-z_]+", json.dumps(doc["spec"]))):
            if f'"{metric}"' not in sources:
                yield f"{name_of(doc)}: no code exports the metric {metric}"


def prometheus_rule() -> Doc:
    """The PrometheusRule that carries deploy/prometheus/alerts.yml's rules."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "mlprod"},
        "spec": {"groups": yaml.safe_load(ALERTS.read_text())["groups"]},
    }


RULES_HEADER = (
    "# Generated from deploy/prometheus/alerts.yml:"
    " `python deploy/checks/k8s_manifests.py --write-rules`\n"
)


def copies_problems() -> Iterator[str]:
    if yaml.safe_load(RULES.read_text()) != prometheus_rule():
        yield f"{RULES.relative_to(ROOT)} differs from {ALERTS.relative_to(ROOT)}: --write-rules"
    for copy, original in COPIES.items():
        if (K8S / copy).read_bytes() != (ROOT / original).read_bytes():
            yield f"deploy/k8s/{copy} differs from {original}: copy it again"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overlays", nargs="*", type=Path)
    parser.add_argument("--kubernetes-version", default="1.32.0")
    parser.add_argument("--write-rules", action="store_true")
    args = parser.parse_args(argv)
    if args.write_rules:
        RULES.write_text(RULES_HEADER + yaml.safe_dump(prometheus_rule(), sort_keys=False))
        return 0
    problems = list(copies_problems())
    with tempfile.TemporaryDirectory() as work:
        for overlay in args.overlays:
            docs = render(overlay, Path(work))
            found = [
                *validate_schemas(docs, args.kubernetes_version),
                *policy(docs),
                *service_problems(docs),
                *metric_problems(docs),
            ]
            problems += [f"{overlay}: {p}" for p in found]
            print(f"{overlay}: {len(docs)} objects, {len(found)} problems")  # noqa: T201
    for problem in problems:
        print(f"FAIL: {problem}")  # noqa: T201
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
