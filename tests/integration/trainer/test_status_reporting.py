"""The driver pushes progress into its EmpoRun's status through the Kubernetes API (the KMock
emulator here, over HTTP), as it does from a RayJob head pod with the run's ServiceAccount. The run
is the session's reporting run (conftest.py), which test_tracking reads too."""

import pytest

from .conftest import REPORTING_STEPS

pytestmark = pytest.mark.slow


def test_training_reports_step_reward_entropy_and_checkpoint(reporting_run):
    assert reporting_run.returncode == 0, reporting_run.output[-3000:]
    n = REPORTING_STEPS
    status = reporting_run.status
    assert status["stepProgress"] == f"{n}/{n}"
    progress = status["progress"]
    assert progress["step"] == n and progress["totalSteps"] == n
    assert 0.0 <= progress["reward"] <= 1.0 and progress["semanticEntropy"] >= 0.0
    assert "filteredFraction" in progress and progress["updatedAt"]
    assert status["latestCheckpoint"]["step"] == n
    assert status["latestCheckpoint"]["uri"].endswith(f"checkpoints/step-{n:06d}")
