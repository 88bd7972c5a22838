"""The status state machine: the table in empo_operator.status, row by row."""

import pytest

from empo_operator.status import Observation, Problem, merge_conditions, next_status, step_progress, verdict

T0, T1 = "2025-01-01T00:00:00Z", "2025-01-01T00:05:00Z"


def rj(deployment=None, job=None, **extra):
    status = {k: v for k, v in {"jobDeploymentStatus": deployment, "jobStatus": job, **extra}.items() if v}
    return {"metadata": {"name": "run"}, "status": status}


@pytest.mark.parametrize("obs, old_phase, phase, reason, restart", [
    (Observation(None, invalid_at_creation=True, problem=Problem("InvalidSpec", "spec.x: bad")), None, "Failed", "InvalidSpec", False),
    (Observation(rj("Running", "RUNNING")), "Succeeded", "Succeeded", "", False),
    (Observation(None, suspend=True), None, "Suspended", "Suspended", False),
    (Observation(None), None, "Pending", "Creating", False),
    (Observation(None, restarts=1), "Restarting", "Restarting", "BackingOff", False),
    (Observation(rj("Complete", "SUCCEEDED")), "Running", "Succeeded", "Succeeded", False),
    (Observation(rj("ValidationFailed", reason="ValidationFailed")), "Pending", "Failed", "ValidationFailed", False),
    (Observation(rj("Failed", "FAILED", reason="AppFailed"), restarts=0, max_restarts=2), "Running", "Restarting", "AttemptFailed", True),
    (Observation(rj("Complete", "STOPPED"), restarts=1, max_restarts=2), "Running", "Restarting", "AttemptFailed", True),
    (Observation(rj("Failed", "FAILED"), restarts=2, max_restarts=2), "Running", "Failed", "RestartsExhausted", False),
    # a preempted attempt restarts whatever the budget; earlier preemptions leave the budget whole
    (Observation(rj("Failed", "FAILED"), restarts=0, max_restarts=0, preempted=True), "Running", "Restarting", "Preempted", True),
    (Observation(rj("Failed", "FAILED"), restarts=3, max_restarts=2, preemptions=2), "Running", "Restarting", "AttemptFailed", True),
    # the trainer reported its preemption and KubeRay still runs the job: the next attempt need not wait
    (Observation(rj("Running", "RUNNING"), max_restarts=0, preempted=True, stopped_early=True), "Running", "Restarting", "Preempted", True),
    (Observation(rj("Initializing"), max_restarts=0, preempted=True, stopped_early=True), "Running", "Restarting", "Preempted", True),
    (Observation(rj("Complete", "SUCCEEDED"), preempted=True, stopped_early=True), "Running", "Succeeded", "Succeeded", False),
    (Observation(rj("Suspended"), preempted=True, stopped_early=True, suspend=True), "Running", "Suspended", "Suspended", False),
    (Observation(rj("Failed", "FAILED"), restarts=3, max_restarts=1, preemptions=2), "Running", "Failed", "RestartsExhausted", False),
    (Observation(rj("Failed", reason="DeadlineExceeded"), max_restarts=3), "Running", "Failed", "DeadlineExceeded", False),
    (Observation(rj("Initializing"), pre_running_expired=True), "Initializing", "Failed", "PreRunningDeadlineExceeded", False),
    (Observation(rj("Running", "PENDING"), pre_running_expired=True), "Initializing", "Failed", "PreRunningDeadlineExceeded", False),
    (Observation(rj("Suspended"), queued=True, pre_running_expired=True), "Pending", "Failed", "PreRunningDeadlineExceeded", False),
    (Observation(rj("Suspended"), suspend=True, pre_running_expired=True), "Suspended", "Suspended", "Suspended", False),
    (Observation(rj("Running", "RUNNING"), pre_running_expired=True), "Running", "Running", "Running", False),
    (Observation(rj("Retrying")), "Running", "Restarting", "Retrying", False),
    (Observation(rj("Suspended"), suspend=True), "Running", "Suspended", "Suspended", False),
    (Observation(rj("Suspending"), suspend=True), "Running", "Suspended", "Suspended", False),
    (Observation(rj("Suspended"), queued=True), None, "Pending", "Queued", False),
    (Observation(rj("Suspended")), "Suspended", "Pending", "Resuming", False),
    (Observation(rj("New"), suspend=True), None, "Suspended", "Suspended", False),
    (Observation(rj()), None, "Initializing", "Initializing", False),
    (Observation(rj("Initializing")), "Pending", "Initializing", "Initializing", False),
    (Observation(rj("Running", "PENDING")), "Initializing", "Initializing", "Initializing", False),
    (Observation(rj("Running", "RUNNING")), "Initializing", "Running", "Running", False),
])
def test_transition_table(obs, old_phase, phase, reason, restart):
    v = verdict(obs, old_phase)
    assert (v.phase, v.reason, v.restart) == (phase, reason, restart)


def conds(patch):
    return {c["type"]: (c["status"], c["reason"]) for c in patch["conditions"]}


@pytest.mark.parametrize("rayjob, suspend, expected", [
    (rj("Initializing"), False, {"Ready": "False", "Reconciling": "True", "Stalled": "False", "Suspended": "False"}),
    (rj("Running", "RUNNING"), False, {"Ready": "True", "Reconciling": "False", "Stalled": "False"}),
    (rj("Running", "RUNNING"), True, {"Ready": "True", "Reconciling": "True"}),  # suspend asked, not done yet
    (rj("Suspended"), True, {"Ready": "False", "Reconciling": "False", "Suspended": "True"}),
    (rj("Complete", "SUCCEEDED"), False, {"Ready": "True", "Reconciling": "False", "Succeeded": "True", "Failed": "False"}),
    (rj("Failed", "FAILED"), False, {"Ready": "False", "Reconciling": "False", "Stalled": "True", "Failed": "True"}),
])
def test_conditions_per_phase(rayjob, suspend, expected):
    patch = next_status({}, Observation(rayjob, suspend=suspend, max_restarts=0), T0).patch
    got = {k: v[0] for k, v in conds(patch).items()}
    assert {k: got[k] for k in expected} == expected
    assert set(got) == {"Ready", "Reconciling", "Stalled", "Suspended", "Succeeded", "Failed"}


def test_last_transition_time_changes_only_on_a_flip():
    first = next_status({}, Observation(rj("Initializing"), generation=1), T0).patch
    # Same statuses, new message (Running with PENDING job): times kept.
    second = next_status({"phase": "Initializing", **first}, Observation(rj("Running", "PENDING"), generation=1), T1).patch
    assert {c["type"]: c["lastTransitionTime"] for c in second["conditions"]} == \
        {c["type"]: T0 for c in first["conditions"]}
    third = next_status({**second}, Observation(rj("Running", "RUNNING"), generation=2), T1).patch
    times = {c["type"]: c["lastTransitionTime"] for c in third["conditions"]}
    assert times["Ready"] == T1 and times["Reconciling"] == T1 and times["Stalled"] == T0
    assert all(c["observedGeneration"] == 2 for c in third["conditions"]) and third["observedGeneration"] == 2


def test_mirrors_rayjob_fields_and_times():
    job = rj("Running", "RUNNING", rayClusterName="run-abcde", dashboardURL="run-head-svc:8265", startTime=T0)
    old = {"phase": "Initializing", "progress": {"step": 12, "totalSteps": 400}}
    upd = next_status(old, Observation(job, rayjob_name="run"), T1)
    p = upd.patch
    assert (p["rayJobName"], p["rayClusterName"], p["dashboardURL"]) == ("run", "run-abcde", "run-head-svc:8265")
    assert (p["jobDeploymentStatus"], p["jobStatus"]) == ("Running", "RUNNING")
    assert p["startTime"] == T0 and "completionTime" not in p and p["stepProgress"] == "12/400"
    assert [(e.type, e.reason) for e in upd.events] == [("Normal", "Running")]
    done = next_status({**old, **p}, Observation(rj("Complete", "SUCCEEDED", endTime=T1), rayjob_name="run"), T1)
    assert done.patch["completionTime"] == T1 and "startTime" not in done.patch
    assert [(e.type, e.reason) for e in done.events] == [("Normal", "Succeeded")]


def test_a_new_attempt_clears_the_old_attempts_mirrored_fields():
    old = {"phase": "Restarting", "rayClusterName": "run-abcde", "jobStatus": "FAILED"}
    p = next_status(old, Observation(None, rayjob_name="run-r1", restarts=1), T1).patch
    assert p["rayJobName"] == "run-r1" and p["rayClusterName"] is None and p["jobStatus"] is None


def test_refused_change_keeps_phase_and_stalls():
    problem = Problem("ImmutableFieldChanged", "spec.model.source: immutable on a live run")
    upd = next_status({"phase": "Running"}, Observation(rj("Running", "RUNNING"), problem=problem), T0)
    assert upd.patch["phase"] == "Running"
    assert conds(upd.patch)["Stalled"] == ("True", "ImmutableFieldChanged")
    assert [(e.type, e.reason) for e in upd.events] == [("Warning", "ImmutableFieldChanged")]  # phase unchanged


def test_invalid_at_creation_names_the_field():
    problem = Problem("InvalidSpec", "the spec is invalid: spec.sampler: gpusPerReplica (3) must be a multiple of tensorParallelSize (2)")
    upd = next_status({}, Observation(None, invalid_at_creation=True, problem=problem), T0)
    c = {c["type"]: c for c in upd.patch["conditions"]}
    assert upd.patch["phase"] == "Failed" and c["Stalled"]["status"] == "True"
    assert "spec.sampler" in c["Stalled"]["message"] and upd.patch["completionTime"] == T0
    assert [(e.type, e.reason) for e in upd.events] == [("Warning", "InvalidSpec")]


@pytest.mark.parametrize("progress, expected", [
    (None, None), ({"step": 0}, "0"), ({"step": 120, "totalSteps": 400}, "120/400"), ({"reward": 0.5}, None),
])
def test_step_progress(progress, expected):
    assert step_progress(progress) == expected


def test_merge_conditions_keeps_unrelated_history():
    old = [{"type": "Ready", "status": "False", "reason": "X", "message": "", "lastTransitionTime": T0}]
    new = {t: (False, "R", "m") for t in ("Ready", "Reconciling", "Stalled", "Suspended", "Succeeded", "Failed")}
    out = merge_conditions(old, new, T1, None)
    assert out[0]["lastTransitionTime"] == T0 and out[1]["lastTransitionTime"] == T1
    assert "observedGeneration" not in out[0]
