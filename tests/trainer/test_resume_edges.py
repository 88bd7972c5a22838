"""Resume edge cases of `empo train` on the tiny model (issue 18): a run whose LATEST is already at
its step limit trains nothing more; a torn last metrics line does not block the resume; killing
only the driver ends the actors of its local Ray (they no longer commit behind its back)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from empo_trainer import lifeline
from tests.waiting import wait_for

from .conftest import REPO, empo

pytestmark = pytest.mark.slow


def _tiny(tmp_path):
    doc = yaml.safe_load((REPO / "examples/tiny.yaml").read_text())
    doc["spec"]["dataset"]["uri"] = str(REPO / "data/local/arith-train.jsonl")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _root(out: Path) -> Path:
    return out / "default" / "tiny-smoke"


def test_a_run_at_its_limit_trains_no_step_more_and_a_torn_metrics_line_does_not_block(tmp_path, empo_env):
    spec, out = _tiny(tmp_path), tmp_path / "out"
    first = empo(["train", spec, "--output", out, "--steps", 2, "--no-progress"], empo_env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = _root(out) / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 3, "reward": 0.')  # a writer killed mid-append
    again = empo(["train", spec, "--output", out, "--steps", 2, "--no-progress"], empo_env, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2/2 steps" in again.stdout and "(resumed from step 2)" in again.stdout, again.stdout
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2]
    latest = json.loads((_root(out) / "checkpoints" / "LATEST").read_text())
    assert (latest["step"], latest["attempt"]) == (2, 1)  # the second attempt committed nothing
    assert sorted(p.name for p in (_root(out) / "attempts").iterdir()) == ["attempt-000001.json", "attempt-000002.json"]


def _lifeline_processes(driver_pid: int) -> list[int]:
    """Live processes started under the driver's lifeline (its local Ray: GCS, raylet, workers)."""
    needle = f"{lifeline.ENV}={driver_pid}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == driver_pid:
            continue
        try:
            if needle in (entry / "environ").read_bytes() and lifeline.alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_killing_only_the_driver_ends_its_actors(tmp_path, empo_env):
    spec, out = _tiny(tmp_path), tmp_path / "out"
    latest = _root(out) / "checkpoints" / "LATEST"
    proc = subprocess.Popen([sys.executable, "-m", "empo_api.cli", "train", str(spec), "--output", str(out),
                             "--steps", "40", "--no-progress"], env=empo_env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or latest.exists(), 600, 0.2, "a first checkpoint")
        assert proc.poll() is None
        workers = _lifeline_processes(proc.pid)
        assert workers, "the learner and sampler actors run under the driver's lifeline"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, not its process group
        proc.wait()
        # the actors that write (learner, samplers) at once; Ray's own helpers once they see it
        wait_for(lambda: not [p for p in _lifeline_processes(proc.pid) if "Actor." in _cmdline(p)], 5, 0.1,
                 "the learner and sampler of the killed driver to exit")
        left = []

        def all_gone():
            left[:] = [_cmdline(p)[:100] for p in _lifeline_processes(proc.pid)]
            return not left

        wait_for(all_gone, 180, 0.2, "every process of the driver's local Ray to exit")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still running: {left if 'left' in locals() else '?'}") from None
    finally:
        for pid in _lifeline_processes(proc.pid):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    step = json.loads(latest.read_text())["step"]
    resumed = empo(["train", spec, "--output", out, "--steps", step, "--no-progress"], empo_env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{step}/{step} steps" in resumed.stdout and f"(resumed from step {step})" in resumed.stdout, resumed.stdout
