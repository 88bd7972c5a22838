"""Prometheus and Grafana: the chart's PodMonitor finds the pods that serve run metrics, and the
dashboard's queries use only metric names the code exports."""

from __future__ import annotations

import json
import re

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from empo_api.models import EmpoRun
from empo_operator.defaults import defaulted
from empo_operator.rayjob import build_rayjob
from empo_operator.settings import from_env as settings_from_env
from empo_trainer import metrics_exporter

from .conftest import CHART_DIR, NAMESPACED, by_kind, one, render_docs

DASHBOARD = CHART_DIR / "files" / "grafana" / "empo.json"
RUN = {"apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun", "metadata": {"name": "qwen", "namespace": "ml-research",
       "uid": "0f0e0d0c-0000-4000-8000-000000000000"},
       "spec": {"model": {"source": "Qwen/Qwen2.5-Math-7B", "tokenSecretRef": {"name": "hf", "key": "token"}},
                "dataset": {"uri": "s3://data/nm.parquet"}, "storage": {"uri": "s3://runs/x"},
                "tracking": {"wandb": {"project": "empo", "apiKeySecretRef": {"name": "wandb", "key": "api-key"}}}}}


def _rayjob() -> dict:
    settings = settings_from_env({"EMPO_TRAINER_IMAGE": "ghcr.io/empo/trainer:0.1.0"})
    return build_rayjob(defaulted(EmpoRun.model_validate(RUN), settings), settings)


def _exported_names() -> set[str]:
    """Sample names a scrape of the driver and of the operator returns (histograms as _bucket etc.)."""
    import empo_operator.metrics  # noqa: F401  (registers the operator's metrics)

    run = metrics_exporter.RunMetrics("ns", "run")
    run.step({key: 1.0 for key in metrics_exporter.STEP_GAUGES})
    run.eval({"step": 1, "accuracy": {"math500": 0.5}})
    empo_operator.metrics.LATENCY.labels("x").observe(0.1)
    empo_operator.metrics.RECONCILES.labels("x").inc()
    empo_operator.metrics.ERRORS.labels("x").inc()
    names = set()
    for text in (generate_latest(run.registry), generate_latest(REGISTRY)):
        for family in text_string_to_metric_families(text.decode()):
            names.update(sample.name for sample in family.samples)
    return {n for n in names if n.startswith("empo_")}


def _queries(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    return exprs


def test_dashboard_queries_use_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    exported = _exported_names()
    used = {name for expr in _queries(dashboard) for name in re.findall(r"\bempo_[a-z_]+\b", expr)}
    assert used and used <= exported, f"not exported: {sorted(used - exported)}"
    # the step metrics a person watches each have a panel, per run and namespace
    for name in ("empo_train_reward", "empo_train_semantic_entropy_nats", "empo_train_tokens_per_second",
                 "empo_train_weight_sync_seconds", "empo_train_step", "empo_operator_reconciles_total"):
        assert name in used, name
    for expr in _queries(dashboard):
        if "empo_train_" in expr and "label_values" not in expr:
            assert 'namespace=~"$namespace"' in expr and 'run=~"$run"' in expr, expr


def test_podmonitor_selects_the_pods_that_serve_run_metrics(chart):
    monitor = one(render_docs(chart, {"metrics": {"runsPodMonitor": {"enabled": True}}}), "PodMonitor")
    head = _rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= head["metadata"]["labels"].items()
    [container] = head["spec"]["containers"]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    port = next(p for p in container["ports"] if p["name"] == endpoint["port"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["EMPO_METRICS_PORT"] == str(port["containerPort"])  # the driver serves where it is scraped
    assert endpoint["honorLabels"] is True and monitor["spec"]["namespaceSelector"] == {"any": True}
    namespaced = one(render_docs(chart, {**NAMESPACED, "metrics": {"runsPodMonitor": {"enabled": True}}}), "PodMonitor")
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["ml-research", "ml-staging"]}
    assert by_kind(render_docs(chart), "PodMonitor") == []  # off unless asked (it needs prometheus-operator)


def test_grafana_dashboard_configmap_carries_the_dashboard(chart):
    cm = one(render_docs(chart, {"grafanaDashboard": {"enabled": True}}), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["empo.json"]) == json.loads(DASHBOARD.read_text())


def test_tokens_reach_only_the_pods_that_use_them():
    cluster = _rayjob()["spec"]["rayClusterSpec"]

    def secret_vars(pod_template):
        return {e["name"]: e["valueFrom"]["secretKeyRef"] for c in pod_template["spec"]["containers"]
                for e in c["env"] if "valueFrom" in e}

    head = secret_vars(cluster["headGroupSpec"]["template"])
    assert head["HF_TOKEN"] == {"name": "hf", "key": "token"} and "WANDB_API_KEY" not in head
    groups = {g["groupName"]: secret_vars(g["template"]) for g in cluster["workerGroupSpecs"]}
    assert groups["learner"]["WANDB_API_KEY"] == {"name": "wandb", "key": "api-key"}
    assert all("HF_TOKEN" not in env for env in groups.values())  # workers read the staged copy
    assert "WANDB_API_KEY" not in groups["sampler"]
