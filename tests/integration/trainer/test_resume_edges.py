"""Resume edge cases of `empo train` on the tiny model (issue 18): a run whose LATEST is already at
its step limit trains nothing more; a torn last metrics line does not block the resume; killing
only the driver ends the actors of its local Ray (they no longer commit behind its back). Both
start from the session's runs in conftest.py (a finished one, a killed one) instead of training
their own."""

import json
import shutil
from pathlib import Path

import pytest

from .conftest import FINISHED_STEPS, empo

pytestmark = pytest.mark.slow


def _root(out: Path) -> Path:
    return out / "default" / "tiny-smoke"


def test_a_run_at_its_limit_trains_no_step_more_and_a_torn_metrics_line_does_not_block(tmp_path, empo_env,
                                                                                      finished_tiny_run):
    first, n = finished_tiny_run.result, FINISHED_STEPS
    assert first.returncode == 0, first.stderr[-3000:]
    spec, out = finished_tiny_run.spec, tmp_path / "out"
    shutil.copytree(finished_tiny_run.out, out)  # the session's finished run, untouched for its other readers
    metrics = _root(out) / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write(f'{{"step": {n + 1}, "reward": 0.')  # a writer killed mid-append
    again = empo(["train", spec, "--output", out, "--steps", n, "--no-progress"], empo_env, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{n}/{n} steps" in again.stdout and f"(resumed from step {n})" in again.stdout, again.stdout
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == list(range(1, n + 1))
    latest = json.loads((_root(out) / "checkpoints" / "LATEST").read_text())
    assert (latest["step"], latest["attempt"]) == (n, 1)  # the second attempt committed nothing
    assert sorted(p.name for p in (_root(out) / "attempts").iterdir()) == ["attempt-000001.json", "attempt-000002.json"]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_killing_only_the_driver_ends_its_actors(driver_killed_at_a_checkpoint):
    killed, n = driver_killed_at_a_checkpoint, FINISHED_STEPS
    assert killed.workers, "the learner and sampler actors run under the driver's lifeline"
    # the actors that write (learner, samplers) at once; Ray's own helpers once they see it
    assert not killed.actors_left, f"the learner and sampler of the killed driver still running: {killed.actors_left}"
    assert not killed.left, f"processes of the driver's local Ray still running: {killed.left}"
    resumed = killed.resumed
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{n}/{n} steps" in resumed.stdout and f"(resumed from step {killed.step})" in resumed.stdout, resumed.stdout
