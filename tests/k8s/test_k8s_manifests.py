"""The Kubernetes policy check (deploy/checks/k8s_manifests.py): a manifest that breaks each rule
fails, a sound one passes; and the overlays as shipped render, validate and pass (kubectl)."""

from __future__ import annotations

import copy
import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "k8s_manifests", ROOT / "deploy/checks/k8s_manifests.py"
)
assert _spec and _spec.loader
checks = importlib.util.module_from_spec(_spec)
sys.modules["k8s_manifests"] = checks
_spec.loader.exec_module(checks)

HARDENED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def worker(**container: Any) -> dict[str, Any]:
    """A worker Deployment that passes every rule, with `container`'s fields changed."""
    probe = {"exec": {"command": ["true"]}}
    base = {
        "name": "ml-celery",
        "image": "mlprod/ml-celery:0.1.0",
        "command": ["celery", "-A", "ml_celery.celery_app", "worker"],
        "env": [{"name": "ML_MODELS", "value": "yolox-nano"}],
        "envFrom": [{"configMapRef": {"name": "mlprod-config"}}],
        "resources": {
            "requests": {"cpu": "1", "memory": "384Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "startupProbe": probe,
        "livenessProbe": probe,
        "readinessProbe": probe,
        "securityContext": dict(HARDENED),
    }
    base.update(container)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "ml-celery-yolox-nano"},
        "spec": {
            "template": {
                "spec": {"terminationGracePeriodSeconds": 120, "containers": [base]},
            }
        },
    }


CONFIG = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "mlprod-config"},
    "data": {"ML_TASK_TIME_LIMIT_S": "90"},
}
SCALED = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "ScaledObject",
    "metadata": {"name": "ml-celery-yolox-nano"},
    "spec": {
        "scaleTargetRef": {"name": "ml-celery-yolox-nano"},
        "minReplicaCount": 1,
        "triggers": [
            {"type": "rabbitmq", "metadata": {"queueName": "detections.yolox-nano"}},
        ],
    },
}


def problems(*docs: dict[str, Any]) -> list[str]:
    return list(checks.policy([CONFIG, SCALED, *docs]))


def test_a_sound_worker_passes() -> None:
    assert problems(worker()) == []


def without(key: str) -> dict[str, Any]:
    doc = worker()
    del doc["spec"]["template"]["spec"]["containers"][0][key]
    return doc


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (worker(resources={"requests": {"cpu": "1", "memory": "1Gi"}}), "no cpu limits"),
        (worker(resources={"limits": {"cpu": "1"}}), "no memory limits"),
        (without("livenessProbe"), "no livenessProbe"),
        (without("readinessProbe"), "no readinessProbe"),
        (without("startupProbe"), "without a startupProbe"),
        (worker(securityContext={**HARDENED, "runAsNonRoot": False}), "runAsNonRoot"),
        (worker(securityContext={**HARDENED, "runAsUser": 0}), "runAsUser is 0"),
        (worker(securityContext={**HARDENED, "readOnlyRootFilesystem": False}), "readOnly"),
        (worker(securityContext={**HARDENED, "capabilities": {}}), "drop ALL"),
        (worker(securityContext={**HARDENED, "allowPrivilegeEscalation": True}), "Escalation"),
        (worker(image="mlprod/ml-celery:latest"), "is `latest`"),
        (worker(image="mlprod/ml-celery"), "has no tag"),
        (worker(image="registry:5000/mlprod/ml-celery"), "has no tag"),
        (worker(env=[{"name": "ML_MODELS", "value": "nanodet-g-416"}]), "no ScaledObject"),
    ],
)
def test_a_container_breaking_a_rule_fails(doc: dict[str, Any], expected: str) -> None:
    found = problems(doc)
    assert any(expected in p for p in found), found


def test_a_digest_pins_an_image() -> None:
    assert problems(worker(image="mlprod/ml-celery@sha256:" + "0" * 64)) == []


def test_an_init_container_needs_limits_and_hardening_but_no_probes() -> None:
    doc = worker()
    init = {"name": "fetch", "image": "mlprod/ml-celery:0.1.0", "securityContext": HARDENED}
    doc["spec"]["template"]["spec"]["initContainers"] = [init]
    found = problems(doc)
    assert any("container fetch: no memory limits" in p for p in found), found
    assert not any("fetch: no livenessProbe" in p for p in found), found
    init["resources"] = worker()["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert problems(doc) == []


def test_a_worker_grace_period_shorter_than_the_task_limit_fails() -> None:
    doc = worker()
    doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 60
    assert any("terminationGracePeriodSeconds 60 < task limit 90" in p for p in problems(doc))
    config = copy.deepcopy(CONFIG)
    config["data"]["ML_TASK_TIME_LIMIT_S"] = "50"
    assert list(checks.policy([config, SCALED, doc])) == []


def test_a_scaled_object_may_not_go_to_zero() -> None:
    scaled = copy.deepcopy(SCALED)
    scaled["spec"]["minReplicaCount"] = 0
    found = list(checks.policy([CONFIG, scaled, worker()]))
    assert any("no ScaledObject (min >= 1)" in p for p in found), found


@pytest.mark.parametrize(
    ("key", "value"),
    [("ML_SECRET_KEY", "x"), ("REDIS_PASSWORD", "x"), ("ML_BROKER_URL", "amqp://u:p@h:5672//")],
)
def test_a_secret_in_a_config_map_fails(key: str, value: str) -> None:
    config = copy.deepcopy(CONFIG)
    config["data"][key] = value
    assert any("looks like a secret" in p for p in checks.policy([config]))


def test_a_custom_resource_is_checked_against_its_schema() -> None:
    broken = copy.deepcopy(SCALED)
    broken["spec"]["minReplicas"] = 1  # the HPA's name, not KEDA's
    found = list(checks.validate_schemas([broken], "1.32.0"))
    assert any("minReplicas" in p for p in found), found
    unknown = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x"}}
    assert any("no schema" in p for p in checks.validate_schemas([unknown], "1.32.0"))


def test_a_built_in_kind_is_checked_against_kubernetes_schemas() -> None:
    doc = worker()
    doc["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}  # misspelt
    found = list(checks.validate_schemas([doc], "1.32.0"))
    assert found, "strict validation should refuse an unknown field"


def test_a_service_must_select_pods_and_target_a_declared_port() -> None:
    doc = worker()
    doc["spec"]["template"]["metadata"] = {"labels": {"app.kubernetes.io/name": "ml-celery"}}
    doc["spec"]["template"]["spec"]["containers"][0]["ports"] = [
        {"name": "metrics", "containerPort": 9808}
    ]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "ml-celery"},
        "spec": {
            "selector": {"app.kubernetes.io/name": "ml-celery"},
            "ports": [{"port": 9808, "targetPort": "metrics"}],
        },
    }
    assert list(checks.service_problems([doc, service])) == []
    service["spec"]["ports"][0]["targetPort"] = "http"
    assert any("targetPort http" in p for p in checks.service_problems([doc, service]))
    service["spec"]["selector"] = {"app.kubernetes.io/name": "nothing"}
    assert any("matches no workload" in p for p in checks.service_problems([doc, service]))


def test_a_scaled_object_on_a_metric_nobody_exports_fails() -> None:
    scaled = copy.deepcopy(SCALED)
    scaled["spec"]["triggers"].append(
        {"type": "prometheus", "metadata": {"query": "max(mlprod_queue_oldest_age_seconds)"}}
    )
    assert list(checks.metric_problems([scaled])) == []
    scaled["spec"]["triggers"][1]["metadata"]["query"] = "max(mlprod_queue_age)"
    assert any("mlprod_queue_age" in p for p in checks.metric_problems([scaled]))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the overlays")
@pytest.mark.parametrize("overlay", ["dev", "managed"])
def test_the_shipped_overlays_pass(overlay: str, tmp_path: Path) -> None:
    docs = checks.render(ROOT / "deploy/k8s/overlays" / overlay, tmp_path)
    assert list(checks.validate_schemas(docs, "1.32.0")) == []
    assert list(checks.policy(docs)) == []
    assert list(checks.service_problems(docs)) == []
    assert list(checks.metric_problems(docs)) == []
    assert list(checks.copies_problems()) == []
