"""Experiment tracking and Prometheus metrics of a run, read back with each tool's own reader.

One real `empo train` run (tiny model, 3 steps) logs to TensorBoard (event files in the run folder),
an MLflow file store and W&B in offline mode, and serves /metrics while it trains: the session's
reporting run (conftest.py), which also reports its status for test_status_reporting. What the
spec sets, MLflow runs and /metrics without a run: tests/unit/trainer/test_tracking.py.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from .conftest import REPORTING_NAMESPACE


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
