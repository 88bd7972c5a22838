"""Experiment tracking and Prometheus metrics of a run, without a run: what the spec sets for
transformers' callbacks, MLflow runs in a file store, /metrics served in-process (a real run that
logs to all of them: tests/integration/trainer/test_tracking.py)."""

from __future__ import annotations

import pytest

from empo_api.models import EmpoRunSpec
from empo_trainer import metrics_exporter, tracking
from tests.scrape import free_port, scrape

SPEC = {"model": {"source": "bundled:tiny-random"}, "dataset": {"uri": "data/local/arith-train.jsonl"},
        "algorithm": {"numGenerations": 4}, "tracking": {"tensorboard": True,
        "mlflow": {"trackingUri": "http://mlflow.mlops:5000", "experiment": "math"},
        "wandb": {"project": "empo", "entity": "team", "mode": "offline"}}}


def test_the_spec_sets_what_transformers_callbacks_read(tmp_path):
    spec = EmpoRunSpec.model_validate(SPEC)
    assert tracking.enabled(spec) == ["tensorboard", "mlflow", "wandb"]
    env = tracking.tracking_env(spec, "research", "qwen", tmp_path, mlflow_run_id="abc")
    assert env["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "tensorboard")
    assert (env["MLFLOW_TRACKING_URI"], env["MLFLOW_EXPERIMENT_NAME"], env["MLFLOW_RUN_ID"]) == (
        "http://mlflow.mlops:5000", "math", "abc")
    assert "MLFLOW_ALLOW_FILE_STORE" not in env  # only a file store needs the opt-in
    assert env["MLFLOW_MAX_LOG_PARAMS"] == "0"  # the spec is the params, not TrainingArguments
    assert (env["WANDB_PROJECT"], env["WANDB_ENTITY"], env["WANDB_MODE"], env["WANDB_DIR"]) == (
        "empo", "team", "offline", str(tmp_path))
    # a resumed attempt continues the same W&B run; another EmpoRun gets another one
    assert env["WANDB_RUN_ID"] == tracking.wandb_run_id("research", "qwen") != tracking.wandb_run_id("research", "qwen2")
    assert tracking.flat_params(spec)["algorithm.numGenerations"] == "4"
    assert tracking.tracking_env(EmpoRunSpec.model_validate({**SPEC, "tracking": {}}), "a", "b", tmp_path) == {}


@pytest.mark.parametrize("uri", ["ftp://host/x", "http://user:pw@mlflow:5000", "databricks://x"])
def test_an_mlflow_uri_that_cannot_work_is_refused_with_the_field_named(uri):
    with pytest.raises(ValueError, match=r"tracking\.mlflow\.trackingUri"):
        EmpoRunSpec.model_validate({**SPEC, "tracking": {"mlflow": {"trackingUri": uri}}})


def test_step_metrics_are_served_with_run_and_namespace_labels():
    metrics = metrics_exporter.RunMetrics("research", "qwen")
    port = metrics.serve(0, "127.0.0.1")
    try:
        metrics.step({"step": 7, "total_steps": 20, "reward": 0.61, "semantic_entropy": 0.73, "tokens_per_second": 812.5,
                      "weight_sync_seconds": 1.5, "batch_digest": "ab12", "label_accuracy": 0.4})
        metrics.eval({"step": 5, "accuracy": {"math500": 0.44}})
        got = scrape(port)
    finally:
        metrics.close()
    run = (("namespace", "research"), ("run", "qwen"))
    assert got["empo_train_step"][run] == 7 and got["empo_train_total_steps"][run] == 20
    assert got["empo_train_reward"][run] == pytest.approx(0.61)
    assert got["empo_train_semantic_entropy_nats"][run] == pytest.approx(0.73)
    assert got["empo_train_tokens_per_second"][run] == pytest.approx(812.5)
    assert got["empo_train_weight_sync_seconds"][run] == pytest.approx(1.5)
    assert got["empo_eval_accuracy"][(("benchmark", "math500"), *run)] == pytest.approx(0.44)
    assert set(got) <= metrics_exporter.metric_names()


def test_no_port_no_server_and_a_bad_port_is_named():
    assert isinstance(metrics_exporter.from_env("a", "b", {}), metrics_exporter.NullMetrics)
    with pytest.raises(ValueError, match="EMPO_METRICS_PORT='http'"):
        metrics_exporter.from_env("a", "b", {"EMPO_METRICS_PORT": "http"})


def test_an_unreachable_mlflow_server_is_named_before_training(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    spec = EmpoRunSpec.model_validate({**SPEC, "tracking": {"mlflow": {"trackingUri": f"http://127.0.0.1:{free_port()}"}}})
    with pytest.raises(tracking.TrackingError, match=r"spec\.tracking\.mlflow\.trackingUri 'http://127\.0\.0\.1:\d+': cannot log"):
        tracking.mlflow_run(spec, "research", "qwen")


def test_one_mlflow_run_per_emporun_across_attempts(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    spec = EmpoRunSpec.model_validate({**SPEC, "tracking": {"mlflow": {"trackingUri": str(tmp_path / "mlruns")}}})
    first = tracking.mlflow_run(spec, "research", "qwen")
    tracking.mlflow_finish(spec, first, [], status="FAILED")  # the attempt died
    assert tracking.mlflow_run(spec, "research", "qwen") == first  # the resumed attempt continues it
    other = tracking.mlflow_run(spec, "research", "qwen-2")
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    assert other != first and client.get_run(first).info.status == "RUNNING"
    assert client.get_experiment(client.get_run(first).info.experiment_id).name == "research"  # default: the namespace
    assert client.get_run(first).data.params["model.source"] == "bundled:tiny-random"
