"""Experiment tracking and Prometheus metrics of a run, read back with each tool's own reader.

One real `empo train` run (tiny model, 3 steps) logs to TensorBoard (event files in the run folder),
an MLflow file store and W&B in offline mode, and serves /metrics while it trains: the session's
reporting run (conftest.py), which also reports its status for test_status_reporting.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from empo_api.models import EmpoRunSpec
from empo_trainer import metrics_exporter, tracking

from .conftest import REPORTING_NAMESPACE, free_port, scrape

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


# ------------------------------------------------------------------------------------------------
# a real run
# ------------------------------------------------------------------------------------------------


def _wandb_history(path: Path) -> list[dict]:
    """History rows of an offline W&B run file: a LevelDB-style log (32 KiB blocks of records with a
    7-byte header) of wandb's own protobuf Records, as `wandb sync` reads it."""
    from wandb.proto import wandb_internal_pb2

    data, rows, pos, buf = path.read_bytes(), [], 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):  # block trailer padding
            pos += left
            continue
        buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


@pytest.mark.slow
def test_a_run_logs_to_tensorboard_mlflow_and_wandb_and_serves_metrics(reporting_run):
    assert reporting_run.returncode == 0, reporting_run.output[-3000:]
    scraped, run_labels = reporting_run.scraped, (("namespace", REPORTING_NAMESPACE), ("run", "tiny-smoke"))
    assert scraped["empo_train_total_steps"][run_labels] == 3 and run_labels in scraped["empo_train_semantic_entropy_nats"]
    run = reporting_run.run
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    entropy = [r["semantic_entropy"] for r in records]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    for tag in ("train/reward", "train/loss", "train/empo/semantic_entropy", "train/empo/filtered_fraction",
                "train/empo/majority_ratio", "train/empo/label_accuracy", "train/empo/generation_seconds",
                "train/empo/weight_sync_seconds", "train/empo/tokens_per_second"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3], tag
    assert [e.value for e in events.Scalars("train/empo/semantic_entropy")] == pytest.approx(entropy)

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow import MlflowClient

    client = MlflowClient(reporting_run.mlruns.as_uri())
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["empo.run"] == f"{REPORTING_NAMESPACE}/tiny-smoke"
    params = runs[0].data.params
    assert params["algorithm.numGenerations"] == "4" and "per_device_train_batch_size" not in params  # the spec
    run_id = runs[0].info.run_id
    assert [m.step for m in client.get_metric_history(run_id, "empo/semantic_entropy")] == [1, 2, 3]
    assert [m.value for m in client.get_metric_history(run_id, "empo/semantic_entropy")] == pytest.approx(entropy)
    assert len(client.get_metric_history(run_id, "empo/generation_seconds")) == 3
    assert "report.html" in [a.path for a in client.list_artifacts(run_id)]

    [wandb_file] = run.glob("wandb/offline-run-*/run-*.wandb")
    rows = [r for r in _wandb_history(wandb_file) if "train/empo/semantic_entropy" in r]
    assert [r["train/global_step"] for r in rows] == [1, 2, 3]
    assert [r["train/empo/semantic_entropy"] for r in rows] == pytest.approx(entropy)
    assert all(r["train/empo/weight_sync_seconds"] >= 0 for r in rows)


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
