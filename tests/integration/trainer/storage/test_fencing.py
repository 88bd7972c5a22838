"""One writer per run: an attempt claims a fencing token; a writer of an older attempt (a zombie
learner whose driver was killed) cannot move LATEST, prune, or append metrics after that. Kill -9
and zombie trials on both backends: LATEST always verifies, the next attempt resumes at the
committed step, metrics have each step once, and no step passes the limit."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from empo_api.models import StorageSpec
from empo_trainer.storage import SupersededError, open_run_storage

from tests.waiting import wait_for

from .conftest import s3_spec, write_checkpoint

REPO = Path(__file__).resolve().parents[4]
WORKER = Path(__file__).with_name("attempt_worker.py")


def test_an_older_attempt_cannot_commit_or_log_after_a_newer_one_claims(open_run, tmp_path):
    old, new = open_run(), open_run()
    assert old.claim_attempt() == 1
    old.append_metrics({"step": 1})
    old.checkpoints.commit(1, write_checkpoint(tmp_path / "c1", seed=1, sizes={"w.bin": 1000}))
    assert json.loads(old.read_bytes("checkpoints/LATEST"))["attempt"] == 1

    assert new.claim_attempt() == 2
    with pytest.raises(SupersededError, match="attempt 1 .* superseded by attempt 2"):
        old.checkpoints.commit(2, write_checkpoint(tmp_path / "c2", seed=2, sizes={"w.bin": 1000}))
    with pytest.raises(SupersededError):
        old.append_metrics({"step": 2})
    assert new.checkpoints.latest().step == 1  # untouched: LATEST and its manifest still verify
    assert [r["step"] for r in new.read_metrics()] == [1]
    new.checkpoints.commit(2, write_checkpoint(tmp_path / "n2", seed=3, sizes={"w.bin": 1000}))
    assert json.loads(new.read_bytes("checkpoints/LATEST"))["attempt"] == 2


WRITES = {  # every way a run writes into its storage, each as the code that does it calls it
    "evaluation": lambda run, tmp: run.write_json("eval/step-000002.json", {"step": 2}),
    "report": lambda run, tmp: run.write_report("<html></html>"),
    "report plot / tracking file": lambda run, tmp: run.write_bytes("plots/reward.png", b"png"),
    "uploaded file": lambda run, tmp: run.upload_file("tensorboard/events", write_checkpoint(tmp, 1, {"e": 10}) / "e"),
    "staged model": lambda run, tmp: run.upload_files([("model/config.json", write_checkpoint(tmp, 1, {"c": 10}) / "c")]),
    "delete": lambda run, tmp: run.delete("eval/step-000001.json"),
    "metrics trim": lambda run, tmp: run.trim_metrics(0),
    "metrics line": lambda run, tmp: run.append_metrics({"step": 2}),
    "checkpoint": lambda run, tmp: run.checkpoints.commit(2, write_checkpoint(tmp, 2, {"w.bin": 100})),
}


@pytest.mark.parametrize("write", WRITES, ids=list(WRITES))
def test_every_write_of_a_superseded_attempt_is_refused(open_run, tmp_path, write):
    old, new = open_run(), open_run()
    assert old.claim_attempt() == 1
    old.append_metrics({"step": 1})
    old.write_json("eval/step-000001.json", {"step": 1})
    before = {k: old.read_bytes(k) for k in old.list()}
    assert new.claim_attempt() == 2
    with pytest.raises(SupersededError, match="attempt 1 .* superseded by attempt 2"):
        WRITES[write](old, tmp_path / "files")
    after = {k: new.read_bytes(k) for k in new.list() if not k.startswith("attempts/")}
    assert after == {k: v for k, v in before.items() if not k.startswith("attempts/")}  # nothing changed
    WRITES[write](new, tmp_path / "files2")  # the newest attempt writes as before


def test_a_torn_last_metrics_line_is_dropped_not_fatal(run):
    run.append_metrics({"step": 1, "reward": 0.5})
    run.append_metrics({"step": 2, "reward": 0.6})
    run.backend.append_bytes("metrics.jsonl", b'{"step": 3, "rew')  # the writer died mid-append
    assert [r["step"] for r in run.read_metrics()] == [1, 2]
    assert run.trim_metrics(2) == 1
    run.append_metrics({"step": 3, "reward": 0.7})
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3]
    assert run.read_bytes("metrics.jsonl").decode().count("\n") == 3


def _worker(spec: StorageSpec, work: Path, limit: int, step_seconds: float, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), spec.model_dump_json(), str(work), str(limit), str(step_seconds)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


LIMIT = 12
TRIALS = {"local": 14, "s3": 8}


@pytest.mark.slow
def test_kill_and_zombie_trials(backend_name, tmp_path, request):
    """Even trials: kill -9 the first attempt at a random point, then run the next. Odd trials: leave
    the first attempt running (a zombie) while the next one starts and runs to the limit."""
    rnd = random.Random(18)
    outcomes = {"killed": 0, "zombie_fenced": 0, "zombie_done_first": 0, "resumed_mid_run": 0}
    for trial in range(TRIALS[backend_name]):
        if backend_name == "s3":
            server = request.getfixturevalue("s3_env")
            spec = s3_spec(server, server.new_bucket())
        else:
            spec = StorageSpec(uri=str(tmp_path / f"store{trial}"))
        store = open_run_storage(spec, "team-a", "run-1")
        zombie = trial % 2 == 1
        # a zombie trains slowly enough to be still running when the next attempt has started
        first = _worker(spec, tmp_path / f"w{trial}-1", LIMIT, 0.3 if zombie else 0.03, dict(os.environ))
        wait_for(lambda: first.poll() is not None or store.exists("metrics.jsonl"), 60, 0.01, "the first attempt")
        time.sleep(rnd.uniform(0.0, 0.35))  # a random point: between steps, mid-upload, mid-commit
        if not zombie:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            outcomes["killed"] += 1
        second = _worker(spec, tmp_path / f"w{trial}-2", LIMIT, 0.0, dict(os.environ))
        out2, _ = second.communicate(timeout=120)
        assert second.returncode == 0, out2
        resumed_from = json.loads(out2.splitlines()[0])["resumed_from"]
        if zombie:
            out1, _ = first.communicate(timeout=120)
            if first.returncode == 3:
                outcomes["zombie_fenced"] += 1
            else:  # it reached the limit before the next attempt claimed: nothing left to do
                assert first.returncode == 0 and resumed_from == LIMIT, out1
                outcomes["zombie_done_first"] += 1
        outcomes["resumed_mid_run"] += 0 < resumed_from < LIMIT
        latest = store.checkpoints.latest()  # LATEST, its manifest and every size verify
        assert latest.step == LIMIT
        store.checkpoints.download(latest, tmp_path / f"dl{trial}")  # and every sha256
        steps = [r["step"] for r in store.read_metrics()]
        assert steps == list(range(1, LIMIT + 1)), (trial, zombie, resumed_from, steps)
    print(f"\n{backend_name}: {TRIALS[backend_name]} trials, {outcomes}")
    assert outcomes["zombie_fenced"] >= 1 and outcomes["resumed_mid_run"] >= TRIALS[backend_name] // 2
