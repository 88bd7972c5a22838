"""`empo train` end to end: real Ray, real TRL GRPO steps with the EMPO reward, checkpoints, resume.
The finished run and the killed one are the session's (conftest.py), shared with test_resume_edges."""

import json
import os

import pytest
import yaml

from .conftest import FINISHED_STEPS, empo, tiny_manifest

pytestmark = pytest.mark.slow


def _metrics(root):
    return [json.loads(l) for l in (root / "default/tiny-smoke/metrics.jsonl").read_text().splitlines() if l]


def test_tiny_run_trains_checkpoints_and_reports(finished_tiny_run, empo_env):
    result, out, n = finished_tiny_run.result, finished_tiny_run.out, FINISHED_STEPS
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_root = out / "default" / "tiny-smoke"
    records = _metrics(out)
    assert [r["step"] for r in records] == list(range(1, n + 1))
    for r in records:  # the EMPO reward's own statistics reach metrics.jsonl every step
        assert 0.0 <= r["reward"] <= 1.0
        assert r["semantic_entropy"] >= 0.0 and 0.0 <= r["filtered_fraction"] <= 1.0
        assert r["tokens_per_second"] > 0 and r["total_steps"] == n
    assert json.loads((run_root / "checkpoints" / "LATEST").read_text())["step"] == n
    assert (run_root / "checkpoints" / f"step-{n:06d}").is_dir()
    assert f"{n}/{n} steps" in result.stdout and str(run_root / "metrics.jsonl") in result.stdout
    assert not (finished_tiny_run.folder / ".ray").exists() and not (empo_env["HOME"] and os.path.exists(
        os.path.join(empo_env["HOME"], ".ray", "auth_token")))


def test_killed_run_resumes_at_the_same_step_with_the_same_data_order(finished_tiny_run,
                                                                      driver_killed_at_a_checkpoint):
    killed = driver_killed_at_a_checkpoint  # killed -9 at its step-2 checkpoint, then run again
    assert finished_tiny_run.result.returncode == 0, finished_tiny_run.result.stderr[-3000:]  # never interrupted
    resumed = killed.resumed
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 2" in resumed.stdout
    got, want = _metrics(killed.out), _metrics(finished_tiny_run.out)
    assert [r["step"] for r in got] == list(range(1, FINISHED_STEPS + 1))  # no duplicate lines from the killed attempt
    assert [r["batch_digest"] for r in got] == [r["batch_digest"] for r in want]


def test_missing_dataset_is_a_clear_error(tmp_path, empo_env):
    spec = tiny_manifest(tmp_path)
    doc = yaml.safe_load(spec.read_text())
    doc["spec"]["dataset"]["uri"] = str(tmp_path / "nope.jsonl")
    spec.write_text(yaml.safe_dump(doc))
    result = empo(["train", spec, "--output", tmp_path / "o", "--no-progress"], empo_env, timeout=300)
    assert result.returncode == 2
    assert "spec.dataset.uri" in result.stderr and "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_impossible_batch_is_refused_before_anything_starts(tmp_path, empo_env):
    spec = tiny_manifest(tmp_path)
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
    spec = tiny_manifest(tmp_path, learner={"replicas": 2, "gpusPerReplica": 0, "precision": "fp32",
                                    "gradientCheckpointing": False})
    result = empo(["train", spec, "--output", out, "--steps", 2, "--no-progress"], empo_env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = _metrics(out)
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["learner_processes"] == 2 for r in records)
    assert json.loads((out / "default/tiny-smoke/checkpoints/LATEST").read_text())["step"] == 2
