"""The trainer's ProgressReporter where no API server answers: a no-op outside a run, bounded and
silent when unreachable, and values the status cannot hold dropped (its patches to a real API:
tests/integration/operator/test_progress_reporter.py)."""

import socket
import time

import pytest

from empo_trainer.status_reporter import NullReporter, ProgressReporter

pytestmark = pytest.mark.timeout(60)


def test_from_env_outside_a_run_is_a_no_op():
    reporter = ProgressReporter.from_env({})
    assert isinstance(reporter, NullReporter)
    reporter.report({"step": 1})
    reporter.close()


def test_unreachable_api_never_raises_and_is_bounded(caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reporter = ProgressReporter("x", "default", api_url=f"http://127.0.0.1:{port}", min_interval=0)
    start = time.monotonic()
    for step in range(5):
        reporter.report({"step": step})
    reporter.eval({"step": 4, "accuracy": {"math500": 0.5}, "average": 0.5})
    reporter.close(timeout=10)
    assert time.monotonic() - start < 20
    assert reporter.patches_sent == 0
    assert "status patch failed" in caplog.text


def test_values_that_do_not_fit_the_status_are_dropped_with_a_warning(caplog):
    reporter = ProgressReporter("x", "default", api_url="http://127.0.0.1:9", min_interval=3600)
    reporter.report({"step": -1})
    reporter.eval({"accuracy": "high"})
    assert "does not fit status.progress" in caplog.text and "does not fit status.lastEval" in caplog.text
    assert reporter.flush() is True  # nothing queued
    reporter.close(timeout=1)
