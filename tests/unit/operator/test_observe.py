"""Reading an attempt's end: a preemption the trainer reported, and what came after it."""

import pytest

from empo_operator.observe import preempted

STOPPED = "2026-12-03T10:00:00Z"


def status(attempt=0, progress_at=None, stopped=STOPPED):
    s = {"lastPreemption": {"attempt": attempt, "step": 4, "time": stopped, "message": "preempted at step 4"}}
    if progress_at:
        s["progress"] = {"step": 4, "updatedAt": progress_at}
    return s


@pytest.mark.parametrize("st, attempt, expected", [
    ({}, 0, False),                                            # never preempted
    (status(attempt=0), 1, False),                             # an earlier attempt's preemption
    (status(), 0, True),                                       # preempted, nothing reported since
    (status(progress_at="2026-12-03T09:59:58Z"), 0, True),     # the last step came before the stop
    (status(progress_at=STOPPED), 0, True),                    # the same second: the stop's own flush
    # Kueue readmitted the attempt and it trained on: its end now is a failure of its own.
    (status(progress_at="2026-12-03T10:03:00Z"), 0, False),
])
def test_an_attempt_ends_preempted_only_if_nothing_was_reported_after_its_preemption(st, attempt, expected):
    assert preempted(st, attempt) is expected
