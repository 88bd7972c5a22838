"""The driver pushes progress into its EmpoRun's status through the Kubernetes API (the KMock
emulator here, over HTTP), as it does from a RayJob head pod with the run's ServiceAccount."""

import pytest
import yaml

from empo_operator.kube import Kube

from .conftest import REPO, empo

pytestmark = pytest.mark.slow


def test_training_reports_step_reward_entropy_and_checkpoint(tmp_path, empo_env, kube_emulator):
    namespace = "trainer-status"
    kube_emulator.add_namespace(namespace)
    manifest = yaml.safe_load((REPO / "examples/tiny.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    manifest["spec"]["dataset"]["uri"] = str(REPO / "data/local/arith-train.jsonl")
    manifest["spec"]["eval"]["benchmarks"] = []
    kube = Kube(kube_emulator.client())
    kube.create(manifest)
    spec_file = tmp_path / "run.yaml"
    spec_file.write_text(yaml.safe_dump(manifest))

    env = empo_env | {"EMPO_RUN_NAME": "tiny-smoke", "EMPO_RUN_NAMESPACE": namespace,
                      "EMPO_API_URL": kube_emulator.url, "EMPO_PROGRESS_INTERVAL": "0"}
    result = empo(["train", spec_file, "--output", tmp_path / "out", "--steps", 2, "--no-progress"], env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    status = kube.get("empo.dev/v1alpha1", "emporuns", namespace, "tiny-smoke")["status"]
    assert status["stepProgress"] == "2/2"
    progress = status["progress"]
    assert progress["step"] == 2 and progress["totalSteps"] == 2
    assert 0.0 <= progress["reward"] <= 1.0 and progress["semanticEntropy"] >= 0.0
    assert "filteredFraction" in progress and progress["updatedAt"]
    assert status["latestCheckpoint"]["step"] == 2
    assert status["latestCheckpoint"]["uri"].endswith("checkpoints/step-000002")
