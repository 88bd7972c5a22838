"""Reading an attempt's end: a preemption the trainer reported, and what came after it."""

import pytest

from empo_operator.observe import preempted, stopped_early

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


RUNNING = {"metadata": {"name": "rj"}, "spec": {}, "status": {"jobDeploymentStatus": "Running"}}


def suspended_since(when, status_value="False"):
    return [{"type": "Suspended", "status": status_value, "lastTransitionTime": when}]


@pytest.mark.parametrize("st, rayjob, queued, expected", [
    (status(), RUNNING, False, True),                           # drained: KubeRay does not know yet
    ({**status(), "conditions": suspended_since("2026-12-03T09:00:00Z")}, RUNNING, False, True),
    # stopped in the second the run started: its own stop, not one from before a resume
    ({**status(), "conditions": suspended_since(STOPPED)}, RUNNING, False, True),
    (status(), None, False, False),                             # no RayJob: nothing to end early
    (status(), RUNNING, True, False),                           # Kueue's run: it resumes in place
    (status(), {**RUNNING, "spec": {"suspend": True}}, False, False),   # being suspended
    # spec.suspend stopped it (the trainer said so) and lifted later: the resumed attempt trains on
    ({**status(), "conditions": suspended_since("2026-12-03T10:02:00Z")}, RUNNING, False, False),
    (status(progress_at="2026-12-03T10:03:00Z"), RUNNING, False, False),  # it trained on since
    (status(attempt=1), RUNNING, False, False),                 # another attempt's preemption
])
def test_a_preempted_attempt_ends_before_kuberay_knows_only_outside_suspension(st, rayjob, queued, expected):
    assert stopped_early(st, 0, rayjob, queued) is expected
