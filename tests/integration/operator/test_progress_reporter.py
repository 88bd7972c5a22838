"""The trainer's ProgressReporter against the KMock emulator: throttled status patches that never
break training (without a server to patch: tests/unit/trainer/test_status_reporter.py)."""

import pytest

from empo_trainer.status_reporter import ProgressReporter
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(60)


def test_throttled_with_the_last_values_flushed_on_close(api, tiny, kube_emulator):
    api.create_run({**tiny, "metadata": {"name": "prog"}})
    reporter = ProgressReporter("prog", api.ns, kubeconfig=str(kube_emulator.kubeconfig), min_interval=30)
    for step in range(1, 51):
        reporter.report({"step": step, "totalSteps": 50, "reward": step / 100, "tokens_per_second": 12.5})
    reporter.checkpoint(50, "runs/default/prog/checkpoints/step-000050")
    reporter.close()
    # 30 s between patches: at most the first report at once, then everything newer in the flush on close.
    assert 1 <= reporter.patches_sent <= 2
    status = api.status("prog")
    assert status["progress"]["step"] == 50 and status["progress"]["tokensPerSecond"] == 12.5
    assert status["stepProgress"] == "50/50" and status["latestCheckpoint"]["step"] == 50
    assert "phase" not in status  # the reporter writes only its own fields


def test_default_is_one_patch_per_30_s_and_only_for_a_new_step(api, tiny, kube_emulator):
    default = ProgressReporter.from_env({"EMPO_RUN_NAME": "x", "EMPO_API_URL": "http://127.0.0.1:9"})
    assert default.min_interval == 30
    default.close(timeout=1)
    api.create_run({**tiny, "metadata": {"name": "same-step"}})
    reporter = ProgressReporter("same-step", api.ns, kubeconfig=str(kube_emulator.kubeconfig), min_interval=0)
    reporter.report({"step": 3, "reward": 0.5})
    wait_for(lambda: reporter.patches_sent == 1, what="the first patch")
    reporter.report({"step": 3, "reward": 0.5})  # the same step again: nothing new to write
    assert reporter.flush() is True and reporter.patches_sent == 1
    reporter.close()
