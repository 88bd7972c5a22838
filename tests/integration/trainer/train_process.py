"""`empo train` as a user runs it, in a subprocess: the tiny smoke run's manifest pointed at an S3
store, the command, and an observer of the store. Shared by the trainer tests that stop, preempt,
cut off or kill a run (test_preemption, test_storage_outage) and by benchmarks/outage_trials.py.
Only the standard library, yaml and the project's own packages, so a benchmark can import it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]


def tiny_spec(folder: Path, bucket: str, endpoint: str, name: str, checkpoint_every: int = 2) -> Path:
    """examples/tiny.yaml named `name`, on the arithmetic set, storing under s3://bucket/runs at
    `endpoint` (the store itself, or a proxy in front of it), with no evaluation at the end."""
    doc = yaml.safe_load((REPO / "examples/tiny.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["dataset"]["uri"] = str(REPO / "data/local/arith-train.jsonl")
    doc["spec"]["storage"] = {"uri": f"s3://{bucket}/runs", "endpoint": endpoint, "checkpointEvery": checkpoint_every}
    doc["spec"]["eval"]["atEnd"] = False
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def start_train(spec: Path, steps: int, env: dict[str, str], **popen) -> subprocess.Popen:
    """`empo train SPEC --steps N --no-progress`, stdout and stderr captured as text."""
    return subprocess.Popen([sys.executable, "-m", "empo_cli", "train", str(spec), "--steps", str(steps),
                             "--no-progress"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def observer(bucket: str, endpoint: str, name: str):
    """The run's storage read directly at `endpoint` (not through a proxy an outage cuts), with no
    outage window of its own: a test's reads fail at once instead of waiting."""
    from empo_api.models import StorageSpec
    from empo_trainer.storage import S3Options, open_run_storage

    return open_run_storage(StorageSpec(uri=f"s3://{bucket}/runs", endpoint=endpoint), "default", name,
                            options=S3Options(outage_window_s=0))
