"""kubectl against the emulator: apply the example, read the printer columns."""

import re
import subprocess

import pytest

from empo_trainer.status_reporter import ProgressReporter
from tests.integration.operator.conftest import REPO, OperatorProcess
from tests.plugins.control_plane import pinned_kubectl
from tests.plugins.kmock_server import wait_for

pytestmark = pytest.mark.timeout(90)


def kubectl(emulator, *args: str) -> str:
    out = subprocess.run([pinned_kubectl(), "--kubeconfig", str(emulator.kubeconfig), *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_apply_example_and_get_shows_the_columns(kube_emulator, tmp_path):
    # The example's own namespace; an operator watches it so Phase is the operator's.
    op = OperatorProcess(kube_emulator, "ml-research", tmp_path / "operator.log").start()
    try:
        # --validate=false: the emulator serves no OpenAPI document.
        out = kubectl(kube_emulator, "apply", "--validate=false", "-f", str(REPO / "examples" / "math-s3.yaml"))
        assert "emporun.empo.dev/qwen-math-7b-empo created" in out
        wait_for(lambda: kube_emulator.objects("rayjobs", "ml-research"), what="the RayJob")
        wait_for(lambda: "Initializing" in kubectl(kube_emulator, "get", "emporuns", "-n", "ml-research"),
                 what="phase Initializing in kubectl get")

        reporter = ProgressReporter("qwen-math-7b-empo", "ml-research", kubeconfig=str(kube_emulator.kubeconfig),
                                    min_interval=0)
        reporter.report({"step": 120, "totalSteps": 400, "reward": 0.625, "semanticEntropy": 0.41})
        reporter.eval({"step": 120, "accuracy": {"math500": 0.7, "aime24": 0.2}, "average": 0.45})
        reporter.close()
        table = wait_for(lambda: "120/400" in (t := kubectl(kube_emulator, "get", "emporuns", "-n", "ml-research")) and t,
                         what="the step column")
        header, row = table.splitlines()[:2]
        assert re.split(r"\s{2,}", header.strip()) == ["NAME", "PHASE", "STEP", "REWARD", "ENTROPY", "ACCURACY", "AGE"]
        cells = re.split(r"\s{2,}", row.strip())
        assert cells[:6] == ["qwen-math-7b-empo", "Initializing", "120/400", "0.625", "0.41", "0.45"]
        # Short name and category from the CRD work too.
        assert "qwen-math-7b-empo" in kubectl(kube_emulator, "get", "empo", "-n", "ml-research")
    finally:
        op.stop()
