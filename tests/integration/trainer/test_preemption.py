"""Checkpoint on SIGTERM (issue 24): `empo train` on the tiny model, against the real SeaweedFS, told
to stop mid-run (a raw SIGTERM, or the preStop command `python -m empo_trainer preempt`) stops
after the step in progress, commits it, says so in one line and exits 75; the same command run
again resumes from that checkpoint and ends with every step's metrics line exactly once. A worker
pod's hook (`preempt --worker`) reaches the learner through the request file on its pod instead.

One run takes every way of stopping in turn, as a run preempted more than once does: its first
attempt gets SIGTERM, the resumed second the preStop command, the resumed third the worker's
request file, and the fourth finishes. Each stop is judged by a test of its own; each attempt
starts Ray and loads the model anew, so one chain costs four attempts instead of six."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from empo_trainer.preemption import EXIT_PREEMPTED, alive, find_actors
from tests.waiting import wait_for

from .conftest import REPO
from .train_process import observer, start_train, tiny_spec

pytestmark = pytest.mark.slow

STEPS = 10  # each stop comes a step or two (three on a busy machine) after the last: three end by step 9
HOWS = ("sigterm", "preempt-command", "worker-request-file")
LINE = re.compile(r"preempted at step (\d+): checkpoint step-(\d+) committed; the next attempt resumes from it")


def _child_of(pid: int, driver: int) -> bool:
    """Whether `pid` runs under `driver`'s local Ray (its lifeline variable names the driver)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"\0EMPO_DRIVER_PID={driver}\0".encode() in b"\0" + f.read()
    except OSError:
        return False


def _stop(how: str, proc: subprocess.Popen, env) -> dict:
    """Ask the running attempt to stop, the way `how` names; what the hook said and saw."""
    seen: dict = {}
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif how == "preempt-command":
        seen["hook"] = subprocess.run([sys.executable, "-m", "empo_trainer", "preempt", "--wait", "60"], env=env,
                                      cwd=REPO, capture_output=True, text=True, timeout=120)
    else:  # the local learner shares this machine's EMPO_PREEMPT_DIR, as on a worker pod
        seen["learners"] = [p for p, t in find_actors().items()
                            if t.startswith("ray::LearnerActor") and _child_of(p, proc.pid)]
        seen["actors"] = find_actors()
        seen["hook"] = subprocess.run([sys.executable, "-m", "empo_trainer", "preempt", "--worker", "--wait", "60"],
                                      env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        seen["learners_alive_after"] = [p for p in seen["learners"] if alive(p)]  # (a zombie has ended)
    return seen


@pytest.fixture(scope="module")
def chain(tmp_path_factory, empo_env, s3_server):
    """The run stopped once each way, then finished: per attempt its exit code, output, the hook's
    result and what the store held right after it."""
    tmp = tmp_path_factory.mktemp("preempt")
    bucket, name = s3_server.new_bucket(), "preempt-chain"
    keys = {**s3_server.env(), "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    env = {**empo_env, **keys, "EMPO_PREEMPT_DIR": str(tmp / "preempt")}
    spec = tiny_spec(tmp, bucket, s3_server.endpoint, name, checkpoint_every=3)  # stop steps on and off its cadence
    attempts, done = {}, 0
    with pytest.MonkeyPatch.context() as mp:  # the observer's own S3 client
        for key, value in keys.items():
            mp.setenv(key, value)
        store = observer(bucket, s3_server.endpoint, name)
        for how in (*HOWS, "finish"):
            proc = start_train(spec, STEPS, env)
            seen = {"resumed_from": done or None, "pid": proc.pid}
            if how != "finish":
                wait_for(lambda: proc.poll() is not None or len(store.read_metrics()) > done, 900, 0.2,
                         f"a step past {done} ({how})")
                seen["running_at_request"] = proc.poll() is None
                if seen["running_at_request"]:
                    asked = time.monotonic()
                    seen.update(_stop(how, proc, env))
            out, err = proc.communicate(timeout=900)
            if how != "finish" and seen["running_at_request"]:
                seen["took"] = time.monotonic() - asked
            latest = store.checkpoints.latest()  # verified: manifest digest and every file's size
            seen.update(code=proc.returncode, out=out, err=err, latest=latest,
                        metrics=[r["step"] for r in store.read_metrics()],
                        drivers=os.listdir(tmp / "preempt" / "drivers"))
            attempts[how] = seen
            if proc.returncode != (0 if how == "finish" else EXIT_PREEMPTED) or latest is None:
                break  # the tests of this attempt and the ones after it say what went wrong
            done = latest.step
    return attempts


@pytest.mark.parametrize("how", HOWS)
def test_a_stop_request_checkpoints_the_step_exits_75_and_the_rerun_loses_nothing(chain, how):
    assert how in chain, f"an earlier attempt of the chain failed: {sorted(chain)}"
    got = chain[how]
    before = got["resumed_from"] or 0
    assert got["running_at_request"], got["err"][-3000:]
    if how == "preempt-command":
        hook = got["hook"]
        assert hook.returncode == 0, hook.stdout + hook.stderr
        assert f"sent SIGTERM to driver {got['pid']}" in hook.stdout and "driver exited after" in hook.stdout, hook.stdout
    elif how == "worker-request-file":
        hook = got["hook"]
        assert got["learners"], got["actors"]
        assert "stops the run after its step" in hook.stdout, hook.stdout + hook.stderr
        # it waited for the actors (other tests' actors on this machine may outlive the wait; ours did not)
        assert not got["learners_alive_after"] or hook.returncode == 1, hook.stdout
    err, out = got["err"], got["out"]
    assert got["code"] == EXIT_PREEMPTED, err[-3000:]
    assert "Traceback" not in err and "SIGTERM received" not in err, err[-3000:]
    found = LINE.findall(err)
    assert len(found) == 1 and found[0][0] == found[0][1], err[-3000:]
    step = int(found[0][0])
    assert before < step < STEPS and "(preempted)" in out, out
    if before:  # a resumed attempt: it went on from the last stop's checkpoint
        assert f"(resumed from step {before})" in out, out
    assert got["latest"].step == step
    assert got["metrics"] == list(range(1, step + 1))  # no step lost, none logged twice
    assert not got["drivers"]  # the driver removed its pid file
    print(f"\npreemption ({how}): stopped at step {step}, checkpoint {got['latest'].total_bytes / 1e6:.1f} MB, "
          f"{got['took']:.1f}s from the request to the driver's exit")


def test_the_attempt_after_the_last_stop_finishes_with_every_step_once(chain):
    assert "finish" in chain, f"an earlier attempt of the chain failed: {sorted(chain)}"
    got = chain["finish"]
    assert got["code"] == 0, got["err"][-3000:]
    stopped = chain[HOWS[-1]]["latest"].step
    assert f"{STEPS}/{STEPS} steps" in got["out"] and f"(resumed from step {stopped})" in got["out"], got["out"]
    assert got["latest"].step == STEPS
    assert got["metrics"] == list(range(1, STEPS + 1))  # 0 steps lost, none twice


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
    assert not (tmp_path / "preempt" / "request").exists()
    assert not (tmp_path / "preempt" / "drivers" / "999999999").exists()
