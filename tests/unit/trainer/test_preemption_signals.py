"""The driver's SIGTERM around ray.init: ray.init installs SIGTERM handlers of its own (its own calls
sys.exit(15); a local cluster's stops the cluster and calls sys.exit(1)), so a pod stopped while Ray
starts used to end as a failure, counted against maxRestarts, instead of a preemption (exit 75).
`around_ray_init` sees the signal whichever handler took it, and gives the driver its handler back.
Real signals to this process; the body stands in for ray.init's handler swap (the real one is
tests/integration/trainer/test_preempted_before_training.py)."""

import os
import signal
import sys

import pytest

from empo_trainer.preemption import DriverPreemption, Preempted


@pytest.fixture
def preempt(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPO_PREEMPT_DIR", str(tmp_path))
    handler = signal.getsignal(signal.SIGTERM)
    p = DriverPreemption().install()
    yield p
    p.uninstall()
    signal.signal(signal.SIGTERM, handler)


def _ray_like_init(on_sigterm):
    """What ray.init does to SIGTERM, then a SIGTERM before it returns."""
    signal.signal(signal.SIGTERM, on_sigterm)
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):  # the handler runs between bytecodes of the main thread
        pass


def _exit_15(signum, frame):
    sys.exit(signum)


def test_a_sigterm_taken_by_rays_handler_during_init_is_a_preemption(preempt):
    with pytest.raises(Preempted) as raised:
        with preempt.around_ray_init():
            _ray_like_init(_exit_15)
    assert isinstance(raised.value.__cause__, SystemExit)
    assert preempt.requested and preempt.reason == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == preempt._on_sigterm  # ours again, not Ray's


def test_a_sigterm_a_handler_swallows_during_init_is_still_a_preemption(preempt):
    with pytest.raises(Preempted):
        with preempt.around_ray_init():
            _ray_like_init(lambda signum, frame: None)


def test_without_a_sigterm_init_errors_pass_through_unchanged(preempt):
    with pytest.raises(SystemExit) as raised:
        with preempt.around_ray_init():
            sys.exit(3)  # not a signal: a failure, not a stop request
    assert raised.value.code == 3 and not preempt.requested
    with pytest.raises(RuntimeError, match="no GCS"):
        with preempt.around_ray_init():
            raise RuntimeError("no GCS")
    with preempt.around_ray_init():
        signal.signal(signal.SIGTERM, _exit_15)
    assert signal.getsignal(signal.SIGTERM) == preempt._on_sigterm and not preempt.requested
    assert signal.set_wakeup_fd(-1) == -1  # the wakeup fd was given back too
