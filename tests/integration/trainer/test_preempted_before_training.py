"""A stop request before the learners train (a pod evicted or drained while its run starts: Ray
starting, the model loading) ends the run's process with exit 75 and one line, and records
status.lastPreemption on the EmpoRun, whichever entry point runs it: `empo train` on a machine or
the RayJob's `python -m empo_trainer run` in a pod. The operator reads lastPreemption to start the
next attempt at once without counting a failure; the RayJob's entry point used to exit 75 without
it, so a pod stopped during its start cost the run one of its maxRestarts.

The status goes to the KMock emulator (the status subresource, as on a real API server; the
reporter's patches are the same). The stop is sent as soon as the driver's pid file appears: the
driver writes it when it takes SIGTERM over, before it imports Ray, so the signal lands in the
start-up (Ray's import alone takes over a second). A third case sends it once the local Ray's GCS
server runs, inside ray.init, whose own SIGTERM handlers then hold the signal (they used to end
the driver with exit 1)."""

import json
import signal
import subprocess
import sys

import pytest
import yaml

from empo_trainer.lifeline import heirs
from empo_trainer.preemption import EXIT_PREEMPTED
from tests.waiting import wait_for

from .conftest import REPO, tiny_manifest

pytestmark = pytest.mark.timeout(300)


def _command(entry: str, manifest, folder) -> list[str]:
    if entry == "empo train":
        return [sys.executable, "-m", "empo_cli", "train", str(manifest), "--no-progress"]
    config = folder / "config.json"  # what the operator writes into the run's ConfigMap
    config.write_text(json.dumps(yaml.safe_load(manifest.read_text())))
    return [sys.executable, "-m", "empo_trainer", "run", "--config", str(config)]


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _ray_starting(driver: int) -> bool:
    """Whether `driver`'s ray.init has started the local cluster's GCS server (and is not done yet:
    the raylet and the driver's connection come after it, seconds on this machine)."""
    return any(_comm(pid).startswith("gcs_server") for pid in heirs(driver))


@pytest.mark.parametrize("entry,when", [("empo train", "start"), ("RayJob entrypoint", "start"),
                                        ("empo train", "ray.init")], ids=["empo-train", "rayjob-entrypoint",
                                                                          "empo-train-in-ray-init"])
def test_a_stop_during_start_up_exits_75_and_tells_the_run(entry, when, kube_emulator, empo_env, tmp_path):
    from empo_operator.kube import Kube

    namespace, name = "before-training", f"{when.replace('.', '-')}-{'cli' if entry == 'empo train' else 'pod'}"
    kube_emulator.add_namespace(namespace)
    manifest = tiny_manifest(tmp_path, storage={"uri": str(tmp_path / "runs")})
    doc = yaml.safe_load(manifest.read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    manifest.write_text(yaml.safe_dump(doc))
    kube = Kube(kube_emulator.client())
    kube.create(doc)
    drivers = tmp_path / "preempt" / "drivers"
    env = {**empo_env, "EMPO_RUN_NAME": name, "EMPO_RUN_NAMESPACE": namespace, "EMPO_PROGRESS_INTERVAL": "0",
           "EMPO_KUBECONFIG": str(kube_emulator.kubeconfig), "EMPO_PREEMPT_DIR": str(tmp_path / "preempt")}
    proc = subprocess.Popen(_command(entry, manifest, tmp_path), env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if when == "start":
            wait_for(lambda: proc.poll() is not None or (drivers.is_dir() and any(drivers.iterdir())), 120, 0.01,
                     "the driver's pid file")
        else:
            wait_for(lambda: proc.poll() is not None or _ray_starting(proc.pid), 120, 0.01,
                     "the local Ray's GCS server")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    lines = [line for line in err.splitlines() if "preempted before training started" in line]
    assert len(lines) == 1 and "the next attempt resumes from the latest checkpoint" in lines[0], err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    status = kube.get("empo.dev/v1alpha1", "emporuns", namespace, name).get("status") or {}
    preemption = status.get("lastPreemption") or {}
    assert "preempted before training started" in preemption.get("message", ""), status
    assert preemption.get("step") is None, preemption  # nothing was checkpointed by this attempt
    wait_for(lambda: not heirs(proc.pid), 60, 0.2, "the driver's local Ray to be gone")
