"""What keeps a run's current attempt from running, read from the API (the reconcile pass's eyes):
its pods' causes (pod_causes), a queue Kueue cannot admit from, a pre-running deadline passed."""

from __future__ import annotations

from typing import Any

from . import builders, pod_causes
from .clock import now, parse_time
from .kube import Kube, in_thread

# Kueue's storage version first (from 0.15; read without its conversion webhook), then the older one.
KUEUE_APIS = ("kueue.x-k8s.io/v1beta2", "kueue.x-k8s.io/v1beta1")
KUEUE_NOT_INSTALLED = "KueueNotInstalled"
LOCAL_QUEUE_NOT_FOUND = "LocalQueueNotFound"


async def blocked(kube: Kube, rayjob: dict[str, Any] | None, attempt: int,
                  pods: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
    """What keeps the attempt's pods from running (pod_causes), while its job is not running yet;
    for a queued RayJob Kueue has not admitted, a queue that cannot admit it."""
    if rayjob is None:
        return None
    deployment, job = ((rayjob.get("status") or {}).get(k) or "" for k in ("jobDeploymentStatus", "jobStatus"))
    queue = ((rayjob.get("metadata") or {}).get("labels") or {}).get(builders.KUEUE_QUEUE_LABEL)
    if queue and (rayjob.get("spec") or {}).get("suspend") and deployment in ("", "New", "Suspended"):
        return await queue_problem(kube, rayjob["metadata"]["namespace"], queue)
    if deployment not in ("", "New", "Initializing", "Waiting", "Running") or job not in ("", "PENDING"):
        return None  # running, or ended: KubeRay's own status says what happened
    mine = [p for p in pods.values() if p["labels"].get(builders.LABEL_ATTEMPT) == str(attempt)]
    warnings: list[dict[str, Any]] = []
    cluster = (rayjob.get("status") or {}).get("rayClusterName")
    if cluster and not any(p["labels"].get(builders.LABEL_COMPONENT) == "head" for p in mine):
        # No head pod yet: did the API server refuse to create it? KubeRay says so only in an Event.
        events = await in_thread(kube.list, "v1", "events", rayjob["metadata"]["namespace"],
                                 f"involvedObject.name={cluster},type=Warning")
        warnings = sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "", reverse=True)
    cause = pod_causes.first_cause(mine, warnings)
    return cause.as_tuple() if cause else None


async def queue_problem(kube: Kube, namespace: str, queue: str) -> tuple[str, str] | None:
    """Why Kueue will never admit a RayJob labelled for `queue`: no Kueue at all, or no such
    LocalQueue in the run's namespace. Kueue itself says nothing in either case."""
    served = [v for v in KUEUE_APIS if await in_thread(kube.serves, v)]
    if not served:
        return (KUEUE_NOT_INSTALLED, f"spec.queueName is {queue!r}, but Kueue is not installed (the API server serves "
                                     f"no kueue.x-k8s.io): nothing will admit the run; install Kueue or remove queueName")
    if await in_thread(kube.get, served[0], "localqueues", namespace, queue) is None:
        return (LOCAL_QUEUE_NOT_FOUND, f"spec.queueName is {queue!r}, but namespace {namespace} has no LocalQueue of "
                                       f"that name: Kueue admits nothing into it; create it or fix queueName")
    return None


def preempted(status: dict[str, Any], attempt: int) -> bool:
    """Whether the attempt's end is its preemption: its trainer wrote status.lastPreemption naming it,
    and reported no step since. Kueue readmits a preempted attempt in the same RayJob, and its trainer
    resumes and trains on; a failure after that is a failure, not the old preemption's free restart."""
    last = status.get("lastPreemption") or {}
    if last.get("attempt") != attempt:
        return False
    stopped = parse_time(last.get("time"))
    reported = parse_time((status.get("progress") or {}).get("updatedAt"))
    return stopped is None or reported is None or reported <= stopped


def stopped_early(status: dict[str, Any], attempt: int, rayjob: dict[str, Any] | None, queued: bool) -> bool:
    """Whether the attempt's trainer reported its preemption (`preempted`) while its RayJob runs on.
    Not for a RayJob that is suspended, nor a preemption from before the run's last resume, nor a
    queued run: Kueue or spec.suspend stops such a RayJob and later resumes it in place, where its
    trainer goes on from the checkpoint."""
    if queued or rayjob is None or (rayjob.get("spec") or {}).get("suspend") or not preempted(status, attempt):
        return False
    suspended = next((c for c in status.get("conditions") or [] if c.get("type") == "Suspended"), {})
    resumed = parse_time(suspended.get("lastTransitionTime")) if suspended.get("status") == "False" else None
    stopped = parse_time((status.get("lastPreemption") or {}).get("time"))
    # Both times have whole seconds. A stop in the second the run started or resumed counts as this
    # run's: a trainer cannot report a stop from before a resume that quickly, and if it did, the
    # early restart costs the resumed attempt a second, where the other way a drained attempt waits
    # for KubeRay to fail its job.
    return resumed is None or stopped is None or stopped >= resumed


def pre_running_expired(rayjob: dict[str, Any] | None, deadline: int | None, status: dict[str, Any]) -> bool:
    """Whether the attempt has waited longer than `deadline` to run: since its RayJob was created,
    or since the user lifted a suspend (a resumed run waits for its GPUs again)."""
    created = parse_time(((rayjob or {}).get("metadata") or {}).get("creationTimestamp"))
    if not deadline or created is None:
        return False
    suspended = next((c for c in status.get("conditions") or [] if c.get("type") == "Suspended"), {})
    resumed = parse_time(suspended.get("lastTransitionTime")) if suspended.get("status") == "False" else None
    since = max(created, resumed) if resumed else created
    return (now() - since).total_seconds() > deadline
