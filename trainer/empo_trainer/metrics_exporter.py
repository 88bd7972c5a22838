"""Prometheus metrics of a training run, served by its driver (the RayJob's head).

On a cluster the operator sets EMPO_METRICS_PORT on the head container (and names the port
`empo-metrics`, which the chart's PodMonitor scrapes); `empo train` serves them when the variable is
set. Every series carries the labels `namespace` and `run`, so one dashboard shows all runs.
Importable without torch or Ray.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

PORT_ENV = "EMPO_METRICS_PORT"
LABELS = ("namespace", "run")

# metrics.jsonl key -> (metric name, help). The dashboard's queries are tested against these names.
STEP_GAUGES = {
    "step": ("empo_train_step", "Optimizer steps done."),
    "total_steps": ("empo_train_total_steps", "Optimizer steps the run will take."),
    "reward": ("empo_train_reward", "Mean EMPO reward of the step's completions."),
    "reward_std": ("empo_train_reward_std", "Standard deviation of the step's rewards."),
    "semantic_entropy": ("empo_train_semantic_entropy_nats", "Mean semantic entropy of the step's groups."),
    "filtered_fraction": ("empo_train_filtered_fraction", "Share of the step's groups the entropy band filtered out."),
    "majority_ratio": ("empo_train_majority_ratio", "Mean share of the largest answer cluster per group."),
    "label_accuracy": ("empo_train_label_accuracy", "Share of majority answers equal to the gold label (monitoring only)."),
    "tokens_per_second": ("empo_train_tokens_per_second", "Generated tokens per second in the step's rollout."),
    "generation_seconds": ("empo_train_generation_seconds", "Rollout generation time of the step."),
    "weight_sync_seconds": ("empo_train_weight_sync_seconds", "Learner -> sampler weight sync time of the step."),
    "step_seconds": ("empo_train_step_seconds", "Wall time of the step."),
    "loss": ("empo_train_loss", "Policy loss of the step."),
}
EVAL_ACCURACY = ("empo_eval_accuracy", "Held-out accuracy of the latest evaluation.")


def metric_names() -> set[str]:
    """Every metric name this module exports (the Grafana dashboard may use only these)."""
    return {name for name, _ in STEP_GAUGES.values()} | {EVAL_ACCURACY[0], "empo_eval_step"}


class RunMetrics:
    """Gauges of one run in a registry of their own (the process may host others, e.g. Ray's)."""

    def __init__(self, namespace: str, run: str, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.labels = {"namespace": namespace, "run": run}
        self._gauges = {key: Gauge(name, doc, LABELS, registry=self.registry) for key, (name, doc) in STEP_GAUGES.items()}
        self._eval = Gauge(*EVAL_ACCURACY, (*LABELS, "benchmark"), registry=self.registry)
        self._eval_step = Gauge("empo_eval_step", "Step of the latest evaluation.", LABELS, registry=self.registry)
        self.server = None

    def step(self, record: dict[str, Any]) -> None:
        for key, gauge in self._gauges.items():
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                gauge.labels(**self.labels).set(value)

    def eval(self, result: dict[str, Any]) -> None:
        for bench, acc in (result.get("accuracy") or {}).items():
            if isinstance(acc, (int, float)):
                self._eval.labels(**self.labels, benchmark=bench).set(acc)
        if isinstance(result.get("step"), int):
            self._eval_step.labels(**self.labels).set(result["step"])

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve /metrics on `port` (0: any free port); returns the port."""
        self.server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return self.server.server_address[1]

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class NullMetrics:
    """No port configured: same methods, does nothing."""

    def step(self, record: dict[str, Any]) -> None: ...
    def eval(self, result: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def from_env(namespace: str, run: str, env: dict[str, str] | None = None) -> RunMetrics | NullMetrics:
    env = dict(os.environ) if env is None else env
    raw = env.get(PORT_ENV, "").strip()
    if not raw:
        return NullMetrics()
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{PORT_ENV}={raw!r}: expected a port number (0-65535)") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{PORT_ENV}={raw!r}: expected a port number (0-65535)")
    metrics = RunMetrics(namespace, run)
    metrics.serve(port, env.get("EMPO_METRICS_ADDR", "0.0.0.0"))
    return metrics
