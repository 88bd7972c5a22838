"""Why the pods of an attempt are not running (pure): the first cause found in the pods KubeRay made,
or in the Warning events KubeRay posted when it could not make them.

KubeRay's RayJob says only "Initializing" while its pods cannot be created (admission refused
them), cannot be placed (Unschedulable), cannot start (image pulls, crash loops) or were killed
(OOMKilled, evicted); the user would have to read pod events to learn it. These causes become the
run's Stalled condition, with the object they came from, within one reconcile of the pod's change.

Inputs are slim copies (`slim_pod`) of the attempt's pods as the operator's watch last saw them, and
the Warning events of its RayCluster. Order of precedence: what keeps every pod from existing
(admission), then from being placed, from starting, from staying up.

A cause can outlive its pod: KubeRay deletes an evicted pod and makes a new one within seconds, and
the new one may be evicted again, so the live pods alone show Evicted for less than one poll. The
watch keeps the last deleted pod that had a cause (`departed`, marked `gone`); it counts after every
live pod's cause, for the same attempt only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

MESSAGE_MAX = 400

# KubeRay's event reasons when the API server refused a pod (admission, quota, a bad template).
FAILED_TO_CREATE = ("FailedToCreateHeadPod", "FailedToCreateWorkerPod")
PULL_FAILURES = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
START_FAILURES = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")


@dataclass(frozen=True)
class PodCause:
    reason: str  # PodCreationRefused, Unschedulable, ImagePullBackOff, CrashLoopBackOff, OOMKilled, Evicted, ...
    message: str  # names the object it came from

    def as_tuple(self) -> tuple[str, str]:
        return self.reason, self.message


def slim_pod(body: dict[str, Any]) -> dict[str, Any]:
    """What `first_cause` reads of a pod: the operator keeps this much per pod, not whole bodies."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    return {
        "name": meta.get("name"),
        "labels": dict(meta.get("labels") or {}),
        "phase": status.get("phase"),
        "reason": status.get("reason"),
        "message": status.get("message"),
        "conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message")}
                       for c in status.get("conditions") or []],
        "containers": [{"name": c.get("name"), "state": c.get("state") or {}, "lastState": c.get("lastState") or {}}
                       for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])],
    }


def _short(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= MESSAGE_MAX else text[:MESSAGE_MAX - 3] + "..."


def _unschedulable(pod: dict[str, Any]) -> PodCause | None:
    for c in pod["conditions"]:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return PodCause("Unschedulable", f"pod {pod['name']}: {_short(c.get('message'))}")
    return None


def _waiting(pod: dict[str, Any], reasons: Iterable[str]) -> PodCause | None:
    for c in pod["containers"]:
        waiting = c["state"].get("waiting") or {}
        if waiting.get("reason") in reasons:
            return PodCause(waiting["reason"], f"pod {pod['name']} container {c['name']}: {_short(waiting.get('message'))}"
                            .rstrip(": "))
    return None


def _crash_loop(pod: dict[str, Any]) -> PodCause | None:
    for c in pod["containers"]:
        if (c["state"].get("waiting") or {}).get("reason") == "CrashLoopBackOff":
            last = c["lastState"].get("terminated") or {}
            how = f"exit code {last.get('exitCode')}" + (f" ({last['reason']})" if last.get("reason") else "")
            return PodCause("CrashLoopBackOff", f"pod {pod['name']} container {c['name']} keeps exiting, last with "
                                                f"{how}: kubectl logs {pod['name']} -c {c['name']} --previous")
    return None


def _oom_killed(pod: dict[str, Any]) -> PodCause | None:
    for c in pod["containers"]:
        for state in (c["state"], c["lastState"]):
            if (state.get("terminated") or {}).get("reason") == "OOMKilled":
                return PodCause("OOMKilled", f"pod {pod['name']} container {c['name']} was killed for exceeding its "
                                             f"memory limit: raise spec.ray.head.memory or spec.ray.worker.memory")
    return None


def _evicted(pod: dict[str, Any]) -> PodCause | None:
    if pod["phase"] == "Failed" and pod["reason"] == "Evicted":
        return PodCause("Evicted", f"pod {pod['name']}: {_short(pod['message'])}")
    return None


def departed(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The slim copy of a deleted pod worth remembering: one whose cause would otherwise vanish."""
    if _cause_of_live([pod]) is None:
        return None
    return pod | {"gone": True}


def first_cause(pods: Iterable[dict[str, Any]], warnings: Iterable[dict[str, Any]] = ()) -> PodCause | None:
    """The first cause that keeps the attempt from running, or None when nothing is wrong (yet).

    `warnings`: Warning events about the attempt's RayCluster (involvedObject, reason, message).
    Deleted pods (`gone`) count only when no live pod and no warning has a cause."""
    pods = list(pods)
    live = sorted((p for p in pods if not p.get("gone")), key=lambda p: p["name"] or "")
    for event in warnings:
        if event.get("reason") in FAILED_TO_CREATE:
            obj = event.get("involvedObject") or {}
            return PodCause("PodCreationRefused", f"{obj.get('kind', 'RayCluster')} {obj.get('name')}: "
                                                  f"{_short(event.get('message'))}")
    cause = _cause_of_live(live)
    if cause is not None:
        return cause
    gone = _cause_of_live(sorted((p for p in pods if p.get("gone")), key=lambda p: p["name"] or ""))
    if gone is None:
        return None
    return PodCause(gone.reason, f"{gone.message} (the pod was deleted; KubeRay makes a new one)")


def _cause_of_live(pods: list[dict[str, Any]]) -> PodCause | None:
    for check in (_unschedulable, lambda p: _waiting(p, PULL_FAILURES), lambda p: _waiting(p, START_FAILURES),
                  _oom_killed, _crash_loop, _evicted):
        for pod in pods:
            cause = check(pod)
            if cause is not None:
                return cause
    return None
