"""`empo train` end to end: real Ray, real TRL GRPO steps with the EMPO reward, checkpoints, resume."""

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from tests.waiting import wait_for

from .conftest import REPO, empo

pytestmark = pytest.mark.slow


def _tiny(tmp_path, **spec_updates):
    doc = yaml.safe_load((REPO / "examples/tiny.yaml").read_text())
    doc["spec"]["dataset"]["uri"] = str(REPO / "data/local/arith-train.jsonl")
    for key, value in spec_updates.items():
        doc["spec"][key] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _metrics(root):
    return [json.loads(l) for l in (root / "default/tiny-smoke/metrics.jsonl").read_text().splitlines() if l]


def test_tiny_run_trains_checkpoints_and_reports(tmp_path, empo_env):
    out = tmp_path / "out"
    result = empo(["train", _tiny(tmp_path), "--output", out, "--steps", 3, "--no-progress"], empo_env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_root = out / "default" / "tiny-smoke"
    records = _metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:  # the EMPO reward's own statistics reach metrics.jsonl every step
        assert 0.0 <= r["reward"] <= 1.0
        assert r["semantic_entropy"] >= 0.0 and 0.0 <= r["filtered_fraction"] <= 1.0
        assert r["tokens_per_second"] > 0 and r["total_steps"] == 3
    assert json.loads((run_root / "checkpoints" / "LATEST").read_text())["step"] == 3
    assert (run_root / "checkpoints" / "step-000003").is_dir()
    assert "3/3 steps" in result.stdout and str(run_root / "metrics.jsonl") in result.stdout
    assert not (tmp_path / ".ray").exists() and not (empo_env["HOME"] and os.path.exists(
        os.path.join(empo_env["HOME"], ".ray", "auth_token")))


def _wait_for_latest(root, step, proc, timeout=600):
    latest = root / "default/tiny-smoke/checkpoints/LATEST"

    def committed():
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early: {proc.stdout.read()[-3000:]}")
        return latest.exists() and json.loads(latest.read_text())["step"] >= step

    wait_for(committed, timeout, 0.2, f"a checkpoint at step {step}")


def test_killed_run_resumes_at_the_same_step_with_the_same_data_order(tmp_path, empo_env):
    spec = _tiny(tmp_path)
    reference = tmp_path / "reference"
    done = empo(["train", spec, "--output", reference, "--steps", 4, "--no-progress"], empo_env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "empo_api.cli", "train", str(spec), "--output", str(interrupted),
                             "--steps", "4", "--no-progress"], env=empo_env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_for_latest(interrupted, 2, proc)  # tiny.yaml checkpoints every 2 steps
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()

    resumed = empo(["train", spec, "--output", interrupted, "--steps", 4, "--no-progress"], empo_env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 2" in resumed.stdout
    got, want = _metrics(interrupted), _metrics(reference)
    assert [r["step"] for r in got] == [1, 2, 3, 4]  # no duplicate lines from the killed attempt
    assert [r["batch_digest"] for r in got] == [r["batch_digest"] for r in want]


def test_missing_dataset_is_a_clear_error(tmp_path, empo_env):
    spec = _tiny(tmp_path)
    doc = yaml.safe_load(spec.read_text())
    doc["spec"]["dataset"]["uri"] = str(tmp_path / "nope.jsonl")
    spec.write_text(yaml.safe_dump(doc))
    result = empo(["train", spec, "--output", tmp_path / "o", "--no-progress"], empo_env, timeout=300)
    assert result.returncode == 2
    assert "spec.dataset.uri" in result.stderr and "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_impossible_batch_is_refused_before_anything_starts(tmp_path, empo_env):
    spec = _tiny(tmp_path)
    doc = yaml.safe_load(spec.read_text())
    doc["spec"]["algorithm"].update(promptsPerStep=3, numGenerations=3, gradientAccumulation=2)
    spec.write_text(yaml.safe_dump(doc))
    result = empo(["train", spec, "--output", tmp_path / "o", "--no-progress"], empo_env, timeout=300)
    assert result.returncode != 0
    assert "gradientAccumulation" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()  # refused before any process or storage was touched


def test_two_data_parallel_learners_train_one_model(tmp_path, empo_env):
    """learner.replicas: 2 starts two learner actors that rendezvous over torch.distributed (gloo
    on CPU, NCCL on GPUs); rank 0 reports and commits for the run."""
    out = tmp_path / "out"
    spec = _tiny(tmp_path, learner={"replicas": 2, "gpusPerReplica": 0, "precision": "fp32",
                                    "gradientCheckpointing": False})
    result = empo(["train", spec, "--output", out, "--steps", 2, "--no-progress"], empo_env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = _metrics(out)
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["learner_processes"] == 2 for r in records)
    assert json.loads((out / "default/tiny-smoke/checkpoints/LATEST").read_text())["step"] == 2
