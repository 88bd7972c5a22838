"""Experiment tracking (spec.tracking): TensorBoard, MLflow and W&B through transformers' own callbacks.

transformers' TensorBoardCallback, MLflowCallback and WandbCallback log every TRL log line (loss,
reward, the EMPO figures the reward logs as empo/*) and read their settings from the environment;
this module sets that environment from the spec, adds the rollout figures TRL does not log (tokens/s,
generation and weight-sync time) to each log line before those callbacks see it, and copies event
files into the run's storage when it is not a local folder.

One MLflow run per EmpoRun, found by its `empo.run` tag: the driver creates it (with the spec as
params) before the learners start, the learner attaches to it through MLFLOW_RUN_ID, a resumed
attempt continues it, and the driver logs report.html into it at the end.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from empo_api.errors import SpecError
from empo_api.models import EmpoRunSpec


RUN_TAG = "empo.run"
TENSORBOARD_PREFIX = "tensorboard/"
WANDB_PREFIX = "wandb/"


def enabled(spec: EmpoRunSpec) -> list[str]:
    """transformers' integration names the spec turns on (the `report_to` it means)."""
    t = spec.tracking
    return [name for name, on in (("tensorboard", t.tensorboard), ("mlflow", t.mlflow), ("wandb", t.wandb)) if on]


def mlflow_uri(uri: str) -> str:
    """A local folder becomes a file store URI (what `empo train` writes next to its runs)."""
    return uri if "://" in uri else Path(uri).expanduser().resolve().as_uri()


def wandb_run_id(namespace: str, name: str) -> str:
    """Stable per EmpoRun, so a resumed attempt continues the same W&B run."""
    return "empo-" + hashlib.sha1(f"{namespace}/{name}".encode()).hexdigest()[:16]


def tracking_env(spec: EmpoRunSpec, namespace: str, name: str, local_dir: Path,
                 mlflow_run_id: str | None = None) -> dict[str, str]:
    """Pure: the environment transformers' callbacks read, for this run.

    `local_dir` is where event files are written: the run's own folder when storage is local,
    a scratch folder (copied into storage) otherwise.
    """
    env: dict[str, str] = {}
    t = spec.tracking
    if t.tensorboard:
        env["TENSORBOARD_LOGGING_DIR"] = str(local_dir / TENSORBOARD_PREFIX.rstrip("/"))
    if t.mlflow:
        uri = mlflow_uri(t.mlflow.tracking_uri)
        # The run's params are the spec (logged once by the driver); TrainingArguments' ~200 would
        # add noise, and MLflow refuses a changed param when an attempt resumes with other --steps.
        env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME=t.mlflow.experiment or namespace,
                   MLFLOW_MAX_LOG_PARAMS="0")
        if uri.startswith("file:"):  # MLflow 3 refuses file stores unless asked; fine for one user's runs
            env["MLFLOW_ALLOW_FILE_STORE"] = "true"
        if mlflow_run_id:
            env["MLFLOW_RUN_ID"] = mlflow_run_id
    if t.wandb:
        env.update(WANDB_PROJECT=t.wandb.project, WANDB_MODE=t.wandb.mode, WANDB_DIR=str(local_dir),
                   WANDB_NAME=f"{namespace}/{name}", WANDB_RUN_ID=wandb_run_id(namespace, name),
                   WANDB_RESUME="allow", WANDB_SILENT="true", WANDB_DISABLE_GIT="true")
        if t.wandb.entity:
            env["WANDB_ENTITY"] = t.wandb.entity
    return env


def flat_params(spec: EmpoRunSpec) -> dict[str, str]:
    """Pure: the spec as MLflow params, dotted camelCase paths as in the manifest ('algorithm.numGenerations')."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = str(value)[:500]  # MLflow's param value limit is 6000; keep params readable

    walk("", spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    return out


def _local_root(storage) -> Path | None:
    root = getattr(storage.backend, "root", None)
    return Path(root) if root else None


def event_dir(storage, scratch: Path) -> Path:
    """Where this process writes event files: into the run folder itself when storage is local."""
    return _local_root(storage) or scratch


# ------------------------------------------------------------------------------------------------
# MLflow run (driver side: created before training, report.html at the end)
# ------------------------------------------------------------------------------------------------


def _mlflow_client(spec: EmpoRunSpec):
    from mlflow import MlflowClient

    uri = mlflow_uri(spec.tracking.mlflow.tracking_uri)
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(uri)


class TrackingError(SpecError):
    """A tracking backend the spec names cannot be used; the message names the field."""


def mlflow_run(spec: EmpoRunSpec, namespace: str, name: str) -> str | None:
    """The id of this EmpoRun's MLflow run, created (with the spec as params) on first use."""
    if not spec.tracking.mlflow:
        return None
    try:
        return _mlflow_run(spec, namespace, name)
    except Exception as exc:  # MlflowException, connection errors: say which setting, not a traceback
        raise TrackingError(f"spec.tracking.mlflow.trackingUri {spec.tracking.mlflow.tracking_uri!r}: cannot log "
                            f"to MLflow there: {str(exc).splitlines()[0][:300]}") from None


def _mlflow_run(spec: EmpoRunSpec, namespace: str, name: str) -> str:
    client = _mlflow_client(spec)
    experiment = spec.tracking.mlflow.experiment or namespace
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{namespace}/{name}'",
                              max_results=1, order_by=["attributes.start_time DESC"])
    if runs:
        client.update_run(runs[0].info.run_id, status="RUNNING")
        return runs[0].info.run_id
    run = client.create_run(experiment_id, run_name=f"{namespace}/{name}", tags={RUN_TAG: f"{namespace}/{name}"})
    from mlflow.entities import Param

    params = [Param(k, v) for k, v in flat_params(spec).items()]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=params[i:i + 100])
    return run.info.run_id


def mlflow_finish(spec: EmpoRunSpec, run_id: str | None, files: list[Path], status: str = "FINISHED") -> None:
    """Attach the run's report (and whatever else is given) and close the MLflow run."""
    if not spec.tracking.mlflow or not run_id:
        return
    client = _mlflow_client(spec)
    for path in files:
        if path.is_file():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status)


# ------------------------------------------------------------------------------------------------
# learner side: transformers' callbacks
# ------------------------------------------------------------------------------------------------


def callbacks(spec: EmpoRunSpec, namespace: str, name: str, engine: Any, storage, scratch: Path) -> list[Any]:
    """TrainerCallbacks to add to the trainer, in this order (the first one enriches the logs the
    integrations then send; the last one copies event files into storage). Sets os.environ."""
    names = enabled(spec)
    if not names:
        return []
    from transformers import TrainerCallback
    from transformers.integrations import get_reporting_integration_callbacks

    local = event_dir(storage, scratch)
    os.environ.update(tracking_env(spec, namespace, name, local, mlflow_run(spec, namespace, name)))

    class RolloutFigures(TrainerCallback):
        """Adds what the rollout engine measured to the step's log line (TRL logs none of it)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is None or "reward" not in logs:
                return
            stats = engine.stats
            logs.update({"empo/tokens_per_second": round(stats.tokens_per_second, 3),
                         "empo/generation_seconds": round(stats.generation_seconds, 3),
                         "empo/weight_sync_seconds": round(stats.sync_seconds, 3)})

    class Publish(TrainerCallback):
        """Event files into the run's storage (S3) at every checkpoint and at the end."""

        def _copy(self):
            if _local_root(storage) is None:
                publish_dir(local, storage)

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self._copy()

        def on_train_end(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            if "wandb" in names:
                import wandb

                if wandb.run is not None:
                    wandb.finish()  # closes the offline run's files before they are copied
            self._copy()

    return [RolloutFigures(), *get_reporting_integration_callbacks(names), Publish()]


def publish_dir(local: Path, storage) -> int:
    """Copy tensorboard/ and wandb/ under `local` into the run's storage; returns files copied."""
    copied = 0
    for prefix in (TENSORBOARD_PREFIX, WANDB_PREFIX):
        folder = local / prefix
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            storage.write_bytes(prefix + path.relative_to(folder).as_posix(), path.read_bytes())
            copied += 1
    return copied
