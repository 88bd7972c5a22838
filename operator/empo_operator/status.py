"""EmpoRun status from what the operator observes: a pure state machine.

Input: the RayJob of the current attempt (KubeRay's jobDeploymentStatus / jobStatus / reason /
message), spec.suspend, restarts and maxRestarts, and a problem with the spec if there is one.
Output: phase, conditions and mirrored fields, and the Events to post for the transition.

Transitions (first matching row wins; "-" is any):

| problem / RayJob jobDeploymentStatus (jobStatus)     | suspend | restarts      | phase        | reason             |
|------------------------------------------------------|---------|---------------|--------------|--------------------|
| spec invalid at creation                             | -       | -             | Failed       | InvalidSpec        |
| phase already Succeeded or Failed                    | -       | -             | (kept)       | (kept)             |
| no RayJob                                            | true    | -             | Suspended    | Suspended          |
| no RayJob                                            | false   | 0             | Pending      | Creating           |
| no RayJob                                            | false   | > 0           | Restarting   | BackingOff         |
| Complete (SUCCEEDED)                                 | -       | -             | Succeeded    | Succeeded          |
| ValidationFailed                                     | -       | -             | Failed       | ValidationFailed   |
| Failed with reason DeadlineExceeded                  | -       | -             | Failed       | DeadlineExceeded   |
| Failed, or Complete (FAILED / STOPPED), preempted    | -       | -             | Restarting   | Preempted          |
| Failed, or Complete (FAILED / STOPPED)               | -       | < maxRestarts | Restarting   | AttemptFailed      |
| Failed, or Complete (FAILED / STOPPED)               | -       | = maxRestarts | Failed       | RestartsExhausted  |
| not yet running (or queued) past preRunningDeadline  | false   | -             | Failed       | PreRunningDeadline.|
| Retrying                                             | -       | -             | Restarting   | Retrying           |
| Suspending, Suspended                                | true    | -             | Suspended    | Suspended          |
| Suspended                                            | false   | -             | Pending      | Queued / Resuming  |
| "", New, Initializing, Waiting                       | true    | -             | Suspended    | Suspended          |
| "", New, Initializing, Waiting, Running (PENDING)    | false   | -             | Initializing | Initializing       |
| Running (RUNNING)                                    | -       | -             | Running      | Running            |

Conditions (kstatus: Reconciling and Stalled are "abnormal-true"; Argo CD and Flux read them):

| phase        | Ready | Reconciling                     | Stalled | Suspended | Succeeded | Failed |
|--------------|-------|---------------------------------|---------|-----------|-----------|--------|
| Pending      | False | True                            | False   | False     | False     | False  |
| Initializing | False | True                            | False   | False     | False     | False  |
| Running      | True  | False (True while suspending)   | False   | False     | False     | False  |
| Restarting   | False | True                            | False   | False     | False     | False  |
| Suspended    | False | False                           | False   | True      | False     | False  |
| Succeeded    | True  | False                           | False   | False     | True      | False  |
| Failed       | False | False                           | True    | False     | False     | True   |

"preempted": the attempt's trainer wrote status.lastPreemption naming it (a pod of the run was told
to stop and the driver ended the attempt after checkpointing its step) and reported no step since (an
attempt Kueue readmitted trains on in the same RayJob; its later failure is a failure: observe.preempted);
restarts counts it, but the comparison with maxRestarts leaves out status.preemptions. The attempt
is replaced as soon as its trainer's report arrives, while KubeRay still counts the job as running
(it learns of the end only once evicted pods are back), unless Kueue or spec.suspend stopped the
RayJob, which they resume in place (observe.stopped_early).

A refused spec change (immutable field, or a change the models reject) keeps the phase and sets
Stalled True with the field in the message until the spec is put back. While the attempt is not
running, what keeps its pods from running (pod_causes: PodCreationRefused, Unschedulable,
ImagePullBackOff, CrashLoopBackOff, OOMKilled, Evicted, ...) sets Stalled True with that reason and
the pod it came from, until it clears. lastTransitionTime changes
only when a condition's status flips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from empo_api.models import Phase

PENDING, INITIALIZING, RUNNING = Phase.pending.value, Phase.initializing.value, Phase.running.value
RESTARTING, SUSPENDED = Phase.restarting.value, Phase.suspended.value
SUCCEEDED, FAILED = Phase.succeeded.value, Phase.failed.value
TERMINAL = (SUCCEEDED, FAILED)
CONDITION_TYPES = ("Ready", "Reconciling", "Stalled", "Suspended", "Succeeded", "Failed")

_STARTING = ("", "New", "Initializing", "Waiting")
PRE_RUNNING_DEADLINE = "PreRunningDeadlineExceeded"
PREEMPTED = "Preempted"
_FAILED_JOB = ("FAILED", "STOPPED")


@dataclass(frozen=True)
class Problem:
    """Why the operator will not act on the spec."""

    reason: str  # InvalidSpec, ImmutableFieldChanged, OperatorDefaults, NameTaken
    message: str
    # False: the run waits (Stalled) until the cause is fixed outside its spec, e.g. an operator
    # setting, instead of failing for good at creation.
    permanent: bool = True


@dataclass(frozen=True)
class Observation:
    rayjob: dict[str, Any] | None  # the current attempt's RayJob; None before creation
    rayjob_name: str | None = None  # the current attempt's RayJob name (whether it exists or not)
    suspend: bool = False
    restarts: int = 0
    max_restarts: int = 3
    generation: int | None = None
    problem: Problem | None = None  # a refused spec (changes nothing else)
    # (reason, message) of what keeps the attempt's pods from running (pod_causes.first_cause)
    blocked: tuple[str, str] | None = None
    invalid_at_creation: bool = False  # the spec never passed: the run cannot start at all
    queued: bool = False  # spec.queueName is set (Kueue keeps the RayJob suspended until admitted)
    # The attempt has not run for spec.preRunningDeadlineSeconds since its RayJob was created.
    pre_running_expired: bool = False
    # The attempt's trainer reported that it stopped when told to, its last step checkpointed
    # (status.lastPreemption names this attempt): its end is no failure.
    preempted: bool = False
    # ... and exited while its RayJob still runs: KubeRay learns that the job ended only once the
    # evicted pods are back (minutes after a drain), and the next attempt need not wait for that.
    stopped_early: bool = False
    preemptions: int = 0  # earlier attempts that ended so: restarts that maxRestarts does not count


@dataclass(frozen=True)
class Verdict:
    phase: str
    reason: str
    message: str
    restart: bool = False  # the current attempt failed and another one is due


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class StatusUpdate:
    patch: dict[str, Any]  # merge patch of .status
    events: list[Event] = field(default_factory=list)
    verdict: Verdict | None = None


def _rayjob_state(rayjob: dict[str, Any]) -> tuple[str, str, str]:
    st = rayjob.get("status") or {}
    detail = "; ".join(x for x in (st.get("reason"), st.get("message")) if x)
    return st.get("jobDeploymentStatus") or "", st.get("jobStatus") or "", detail


def verdict(obs: Observation, old_phase: str | None) -> Verdict:
    """The row of the transition table that applies."""
    if obs.invalid_at_creation:
        msg = obs.problem.message if obs.problem else "the spec is invalid"
        return Verdict(FAILED, "InvalidSpec", msg)
    if old_phase in TERMINAL:
        return Verdict(old_phase, "", "")
    if obs.rayjob is None:
        if obs.suspend:
            return Verdict(SUSPENDED, "Suspended", "spec.suspend is true; no Ray cluster is running")
        if obs.restarts:
            return Verdict(RESTARTING, "BackingOff", f"waiting to start attempt {obs.restarts}")
        return Verdict(PENDING, "Creating", "creating the RayJob")
    deployment, job, detail = _rayjob_state(obs.rayjob)
    name = obs.rayjob.get("metadata", {}).get("name", "")
    if deployment == "Complete" and job == "SUCCEEDED":
        return Verdict(SUCCEEDED, "Succeeded", f"RayJob {name} succeeded")
    if deployment == "ValidationFailed":
        return Verdict(FAILED, "ValidationFailed", f"KubeRay rejected RayJob {name}: {detail or 'no detail'}")
    if deployment == "Failed" or (deployment == "Complete" and job in _FAILED_JOB):
        why = f"RayJob {name} failed" + (f": {detail}" if detail else f" (job {job or 'unknown'})")
        if (obs.rayjob.get("status") or {}).get("reason") == "DeadlineExceeded":
            # activeDeadlineSeconds bounds the run; another attempt would only exceed it again
            # (KubeRay does not retry it either).
            return Verdict(FAILED, "DeadlineExceeded", f"{why}; not retried (activeDeadlineSeconds)")
        if obs.preempted:
            return Verdict(RESTARTING, PREEMPTED,
                           f"RayJob {name} stopped when its pods were told to, with a checkpoint; the next attempt "
                           f"resumes from it (not counted against maxRestarts)", restart=True)
        failures = obs.restarts - obs.preemptions
        if failures < obs.max_restarts:
            return Verdict(RESTARTING, "AttemptFailed",
                           f"{why}; restart {failures + 1} of {obs.max_restarts}", restart=True)
        return Verdict(FAILED, "RestartsExhausted", f"{why}; no restarts left (maxRestarts {obs.max_restarts})")
    if obs.stopped_early and deployment not in ("Suspending", "Suspended"):
        return Verdict(RESTARTING, PREEMPTED,
                       f"the trainer of RayJob {name} stopped when its pods were told to, with a checkpoint; the "
                       f"next attempt resumes from it without waiting for KubeRay to end the job (not counted "
                       f"against maxRestarts)", restart=True)
    waiting = deployment in _STARTING or (deployment == "Running" and job in ("", "PENDING")) \
        or (deployment in ("Suspending", "Suspended") and obs.queued and not obs.suspend)
    if waiting and obs.pre_running_expired:
        why = f"{obs.blocked[0]}: {obs.blocked[1]}" if obs.blocked else "are the GPUs it asks for available?"
        return Verdict(FAILED, PRE_RUNNING_DEADLINE,
                       f"RayJob {name} did not start running within spec.preRunningDeadlineSeconds (default: the "
                       f"operator's preRunningDeadlineSeconds) "
                       f"({deployment or 'created'}{', waiting for Kueue' if obs.queued else ''}): {why}")
    if deployment == "Retrying":
        return Verdict(RESTARTING, "Retrying", f"KubeRay is retrying RayJob {name}")
    if deployment in ("Suspending", "Suspended"):
        if obs.suspend:
            return Verdict(SUSPENDED, "Suspended", "spec.suspend is true; the Ray cluster is released")
        if obs.queued:
            return Verdict(PENDING, "Queued", f"RayJob {name} waits for Kueue admission")
        return Verdict(PENDING, "Resuming", f"RayJob {name} is resuming")
    if deployment in _STARTING and obs.suspend:
        return Verdict(SUSPENDED, "Suspended", "spec.suspend is true")
    if deployment in _STARTING or (deployment == "Running" and job in ("", "PENDING")):
        return Verdict(INITIALIZING, "Initializing", f"RayJob {name}: {deployment or 'created'}")
    if deployment == "Running":
        return Verdict(RUNNING, "Running", f"RayJob {name} is running")
    return Verdict(INITIALIZING, "Unknown", f"RayJob {name} reports jobDeploymentStatus {deployment!r}")


def _conditions_for(v: Verdict, obs: Observation) -> dict[str, tuple[bool, str, str]]:
    """type -> (status, reason, message) for the six conditions."""
    p, r, m = v.phase, v.reason, v.message
    suspending = p == RUNNING and obs.suspend
    reconciling = p in (PENDING, INITIALIZING, RESTARTING) or suspending
    out = {
        "Ready": (p in (RUNNING, SUCCEEDED), r, m),
        "Reconciling": (reconciling, "Suspending" if suspending else r,
                        "spec.suspend is true; waiting for KubeRay to release the cluster" if suspending else m),
        "Stalled": (p == FAILED, r, m),
        "Suspended": (p == SUSPENDED, r, m),
        "Succeeded": (p == SUCCEEDED, r, m),
        "Failed": (p == FAILED, r, m),
    }
    if obs.blocked is not None and p in (PENDING, INITIALIZING, RESTARTING):
        out["Stalled"] = (True, *obs.blocked)
    if obs.problem is not None and not obs.invalid_at_creation:
        out["Stalled"] = (True, obs.problem.reason, obs.problem.message)
    if obs.invalid_at_creation and obs.problem is not None:
        out["Stalled"] = (True, "InvalidSpec", obs.problem.message)
    return out


def merge_conditions(old: list[dict[str, Any]], new: dict[str, tuple[bool, str, str]], now: str,
                     generation: int | None) -> list[dict[str, Any]]:
    """New conditions; lastTransitionTime kept from `old` unless the status flips."""
    by_type = {c.get("type"): c for c in old or []}
    out = []
    for ctype in CONDITION_TYPES:
        status, reason, message = new[ctype]
        s = "True" if status else "False"
        prev = by_type.get(ctype)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == s else None
        cond = {"type": ctype, "status": s, "reason": reason or ("As" + ctype if status else "Not" + ctype),
                "message": message, "lastTransitionTime": since or now}
        if generation is not None:
            cond["observedGeneration"] = generation
        out.append(cond)
    return out


def step_progress(progress: dict[str, Any] | None) -> str | None:
    """'step/total' for kubectl get (just 'step' when the total is unknown)."""
    if not progress or progress.get("step") is None:
        return None
    total = progress.get("totalSteps")
    return f"{progress['step']}/{total}" if total else str(progress["step"])


def next_status(old: dict[str, Any] | None, obs: Observation, now: str) -> StatusUpdate:
    """The status patch and the Events for one observation."""
    old = old or {}
    old_phase = old.get("phase")
    v = verdict(obs, old_phase)
    patch: dict[str, Any] = {
        "phase": v.phase,
        "conditions": merge_conditions(old.get("conditions") or [], _conditions_for(v, obs) if v.reason
                                       else _kept(old), now, obs.generation),
        "restarts": obs.restarts,
    }
    if obs.generation is not None:
        patch["observedGeneration"] = obs.generation
    if obs.rayjob_name and old_phase not in TERMINAL:
        patch["rayJobName"] = obs.rayjob_name
    rj = obs.rayjob
    if old_phase not in TERMINAL and (rj is not None or obs.rayjob_name):
        st = (rj or {}).get("status") or {}
        for key in ("rayClusterName", "dashboardURL", "jobDeploymentStatus", "jobStatus"):
            patch[key] = st.get(key) or None  # mirrored as is; None removes a stale attempt's value
    if rj is not None and old_phase not in TERMINAL:
        st = rj.get("status") or {}
        if not old.get("startTime") and v.phase != PENDING:
            patch["startTime"] = st.get("startTime") or now
    if v.phase in TERMINAL and not old.get("completionTime"):
        patch["completionTime"] = ((rj or {}).get("status") or {}).get("endTime") or now
    sp = step_progress(old.get("progress"))
    if sp and sp != old.get("stepProgress"):
        patch["stepProgress"] = sp

    events = []
    if v.phase != old_phase:
        warn = v.phase in (FAILED, RESTARTING) and v.reason != PREEMPTED  # a drain is routine
        events.append(Event("Warning" if warn else "Normal", v.reason or v.phase, f"{v.phase}: {v.message}"))
    old_stalled = next((c for c in old.get("conditions") or [] if c.get("type") == "Stalled"), {})
    new_stalled = next(c for c in patch["conditions"] if c["type"] == "Stalled")
    if new_stalled["status"] == "True" and old_stalled.get("status") != "True" and v.phase not in TERMINAL:
        events.append(Event("Warning", new_stalled["reason"], new_stalled["message"]))
    return StatusUpdate(patch, events, v)


def _kept(old: dict[str, Any]) -> dict[str, tuple[bool, str, str]]:
    """A terminal run keeps its conditions."""
    by_type = {c.get("type"): c for c in old.get("conditions") or []}
    return {t: (by_type.get(t, {}).get("status") == "True", by_type.get(t, {}).get("reason", ""),
                by_type.get(t, {}).get("message", "")) for t in CONDITION_TYPES}
