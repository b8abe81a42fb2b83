"""deploy/'s Prometheus rules and config pass promtool; the Grafana dashboard is sound JSON
whose every query names metrics that the API or the worker define."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import need

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "mlprod.json"
METRIC = re.compile(r"\bmlprod_[a-z_]+\b")
# what a histogram or a counter exposes beyond its own name
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def used_metrics() -> set[str]:
    """Every mlprod_* series name that a rule or a dashboard query reads."""
    return {m for expr in rule_expressions() + dashboard_expressions() for m in
            METRIC.findall(expr)}  # fmt: skip


def defined_metrics() -> set[str]:
    """The names our code defines: the request and task metrics, and the scrape-time ones."""
    from prometheus_client import REGISTRY

    import ml_api.metrics
    import ml_celery.metrics  # noqa: F401  # registers the worker's metrics

    names = {metric.name for metric in REGISTRY.collect() if metric.name.startswith("mlprod_")}
    source = Path(ml_api.metrics.__file__).read_text()
    names |= set(re.findall(r'GaugeMetricFamily\(\s*"(mlprod_[a-z_]+)"', source))
    return names


@pytest.mark.parametrize("command", [["check", "rules", str(RULES)],
                                     ["check", "config", str(DEPLOY / "prometheus" /
                                                             "prometheus.yml")]])  # fmt: skip
def test_promtool_accepts_the_rules_and_the_config(command: list[str]) -> None:
    promtool = shutil.which("promtool")
    need(promtool is not None, "no `promtool`: apt-get install prometheus")
    assert promtool is not None
    done = subprocess.run([promtool, *command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_used_by_the_dashboard_and_rules_is_defined() -> None:
    defined = defined_metrics()
    used = used_metrics()
    assert len(used) >= 10
    unknown = [
        name for name in sorted(used)
        if name not in defined and not any(name.removesuffix(s) in defined for s in SUFFIXES)
    ]  # fmt: skip
    assert not unknown


def test_the_alerts_cover_queue_age_failures_ready_workers_and_the_result_store() -> None:
    exprs = " ".join(rule_expressions())
    for metric in ("mlprod_queue_oldest_age_seconds", "mlprod_tasks_total",
                   "mlprod_ready_processes", "mlprod_result_store_up"):  # fmt: skip
        assert metric in exprs


def test_the_dashboard_panels_have_unique_ids_and_a_query_each() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    assert all(panel["targets"] and panel["title"] for panel in panels)
