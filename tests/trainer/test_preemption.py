"""Checkpoint on SIGTERM (issue 24): `empo train` on the tiny model, against the real SeaweedFS, told
to stop mid-run (a raw SIGTERM, or the preStop command `python -m empo_trainer preempt`) stops
after the step in progress, commits it, says so in one line and exits 75; the same command run
again resumes from that checkpoint and ends with every step's metrics line exactly once. A worker
pod's hook (`preempt --worker`) reaches the learner through the request file on its pod instead."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from empo_api.models import StorageSpec
from empo_trainer.preemption import EXIT_PREEMPTED, alive, find_actors
from empo_trainer.storage import open_run_storage
from tests.waiting import wait_for

from .conftest import REPO

pytestmark = pytest.mark.slow

STEPS = 8
LINE = re.compile(r"preempted at step (\d+): checkpoint step-(\d+) committed; the next attempt resumes from it")


def _spec(tmp_path, bucket, endpoint, name):
    doc = yaml.safe_load((REPO / "examples/tiny.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["dataset"]["uri"] = str(REPO / "data/local/arith-train.jsonl")
    # checkpointEvery 3: the stop step may or may not be one it commits anyway; either way once
    doc["spec"]["storage"] = {"uri": f"s3://{bucket}/runs", "endpoint": endpoint, "checkpointEvery": 3}
    doc["spec"]["eval"]["atEnd"] = False
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _train(spec, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "empo_api.cli", "train", str(spec), "--steps", str(STEPS),
                             "--no-progress"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.parametrize("how", ["sigterm", "preempt-command", "worker-request-file"])
def test_a_stop_request_checkpoints_the_step_exits_75_and_the_rerun_loses_nothing(tmp_path, empo_env, s3_env, how):
    bucket, name = s3_env.new_bucket(), f"preempt-{how}"
    store = open_run_storage(StorageSpec(uri=f"s3://{bucket}/runs", endpoint=s3_env.endpoint), "default", name)
    spec = _spec(tmp_path, bucket, s3_env.endpoint, name)
    env = {**empo_env, **s3_env.env(), "EMPO_PREEMPT_DIR": str(tmp_path / "preempt")}
    proc = _train(spec, env)
    wait_for(lambda: proc.poll() is not None or store.exists("metrics.jsonl"), 900, 0.1, "the first step")
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    asked = time.monotonic()
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif how == "preempt-command":
        hook = subprocess.run([sys.executable, "-m", "empo_trainer", "preempt", "--wait", "60"], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert hook.returncode == 0, hook.stdout + hook.stderr
        assert f"sent SIGTERM to driver {proc.pid}" in hook.stdout and "driver exited after" in hook.stdout, hook.stdout
    else:  # the local learner shares this machine's EMPO_PREEMPT_DIR, as on a worker pod
        learners = [p for p, t in find_actors().items() if t.startswith("ray::LearnerActor") and _child_of(p, proc.pid)]
        assert learners, find_actors()
        hook = subprocess.run([sys.executable, "-m", "empo_trainer", "preempt", "--worker", "--wait", "60"], env=env,
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert "stops the run after its step" in hook.stdout, hook.stdout + hook.stderr
        # it waited for the actors (other tests' actors on this machine may outlive the wait; ours did not)
        assert not [p for p in learners if alive(p)] or hook.returncode == 1, hook.stdout  # (a zombie has ended)
    out, err = proc.communicate(timeout=300)
    took = time.monotonic() - asked
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "Traceback" not in err and "SIGTERM received" not in err, err[-3000:]
    found = LINE.findall(err)
    assert len(found) == 1 and found[0][0] == found[0][1], err[-3000:]
    step = int(found[0][0])
    assert 1 <= step < STEPS and "(preempted)" in out, out
    latest = store.checkpoints.latest()  # verified: manifest digest and every file's size
    assert latest.step == step
    assert [r["step"] for r in store.read_metrics()] == list(range(1, step + 1))
    assert not os.listdir(tmp_path / "preempt" / "drivers")  # the driver removed its pid file
    print(f"\npreemption ({how}): stopped at step {step}, checkpoint {latest.total_bytes / 1e6:.1f} MB, "
          f"{took:.1f}s from the request to the driver's exit")

    again = _train(spec, env)
    out2, err2 = again.communicate(timeout=900)
    assert again.returncode == 0, err2[-3000:]
    assert f"{STEPS}/{STEPS} steps" in out2 and f"(resumed from step {step})" in out2, out2
    assert store.checkpoints.latest().step == STEPS
    assert [r["step"] for r in store.read_metrics()] == list(range(1, STEPS + 1))  # 0 steps lost, none twice


def _child_of(pid: int, driver: int) -> bool:
    """Whether `pid` runs under `driver`'s local Ray (its lifeline variable names the driver)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"\0EMPO_DRIVER_PID={driver}\0".encode() in b"\0" + f.read()
    except OSError:
        return False


def test_the_preempt_command_without_a_driver_or_actors_does_nothing_and_succeeds(tmp_path, empo_env):
    env = {**empo_env, "EMPO_PREEMPT_DIR": str(tmp_path / "preempt")}
    (tmp_path / "preempt" / "drivers").mkdir(parents=True)
    (tmp_path / "preempt" / "drivers" / "999999999").write_bytes(b"gone\0")  # a driver killed -9: stale
    for extra in ([], ["--worker"]) if not find_actors() else ([],):  # (other tests' actors on this machine)
        started = time.monotonic()
        hook = subprocess.run([sys.executable, "-m", "empo_trainer", "preempt", "--wait", "5", *extra], env=env,
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert hook.returncode == 0 and "nothing" in hook.stdout, hook.stdout + hook.stderr
        assert time.monotonic() - started < 5  # a preStop hook: no waiting when there is nothing to wait for
    assert not (tmp_path / "preempt" / "drivers" / "999999999").exists()
    assert not (tmp_path / "preempt" / "request").exists()
