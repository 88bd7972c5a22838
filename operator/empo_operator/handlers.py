"""kopf handlers: gather inputs, call the pure functions, do the I/O. Nothing else lives here.

Level-triggered: `reconcile` brings one run's children and status in line with what it observes
now, whatever woke it, and is safe to repeat. It is woken by:
- the EmpoRun being created, resumed (operator start) or its spec changing: kopf retries these
  handlers when they raise (an API error, a conflict);
- a resync every EMPO_RESYNC_SECONDS over every live run the watch has shown: it repairs what no
  event announced or an error left behind (a RayJob deleted by hand, a lost write, a backoff that
  ended while the operator was down). One loop, not a kopf timer per run: kopf timers put a
  finalizer on every run, and then no run could be deleted while the operator is down;
- a RayJob of the run changing (the fast path: its errors are logged, the timer repairs);
- the end of a restart backoff, whose time is kept in status.nextAttemptTime (so an operator
  restart neither skips nor forgets it).

A resync of a steady run costs no API request: the runs and RayJobs come from the operator's
watches (memo.runs, memo.rayjobs), the ConfigMap is read only when the spec changed or an attempt
starts, and the status is written only when it changes.

Identity: children are found by name and accepted only if their ownerReference carries the run's
uid; RayJob names carry the uid too (builders.rayjob_name), deletes carry a uid precondition and
status writes the resourceVersion they were computed from (a conflict re-reads and recomputes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import logging
from typing import Any, Awaitable, Callable

import kopf
from kubernetes.client.exceptions import ApiException

from empo_api.models import API_VERSION, GROUP, PLURAL, VERSION, EmpoRun

from . import builders, lifecycle, metrics, pod_causes
from .children import build_children
from .kube import Kube, owner_uids
from .settings import Settings, from_env
from .status import PRE_RUNNING_DEADLINE, TERMINAL, Event, Observation, Problem, next_status

log = logging.getLogger(__name__)
RAYJOB = ("ray.io/v1", "rayjobs")
EMPORUN = (API_VERSION, PLURAL)
NAME_TAKEN = "NameTaken"
CONFLICT_RETRIES = 5


class Conflict(Exception):
    """The run changed between our read and our write (the trainer's progress, a user's edit)."""


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def stamp(t: datetime.datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    # The API client is blocking; asyncio.to_thread uses the loop's default executor, sized at startup.
    return await asyncio.to_thread(fn, *args)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's bookkeeping in annotations: the EmpoRun status schema has no room for status.kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.reporting_component = "empo-operator"
    settings.posting.level = logging.WARNING  # only our own kopf.event calls become Events
    # kopf's max_workers sizes its executor for sync handlers only; our handlers are async and
    # call the API through asyncio.to_thread, which uses the loop's default executor.
    if "settings" not in memo:
        memo.settings = from_env()
    # Watching named namespaces needs no cluster-wide view: without this, kopf lists and watches
    # Namespaces (and CRDs) at the cluster scope, which a namespaced install's RBAC does not grant,
    # and retries the 403s for about a minute before it serves the first run.
    settings.scanning.disabled = not memo.settings.clusterwide
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=memo.settings.api_threads, thread_name_prefix="empo-api"))
    if "kube" not in memo:
        memo.kube = await in_thread(Kube)
    init_memo(memo)
    memo.resync_task = asyncio.get_running_loop().create_task(_resync_forever(memo))


def init_memo(memo: kopf.Memo) -> None:
    """The operator's in-process state: backoff wake-ups, the watches' latest copies of runs and
    RayJobs, and one lock per run."""
    memo.wakeups, memo.runs, memo.rayjobs, memo.locks = {}, {}, {}, {}
    memo.pods = {}  # (namespace, run) -> pod name -> pod_causes.slim_pod


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("resync_task")
    if task is not None:
        task.cancel()


async def _resync_forever(memo: kopf.Memo) -> None:
    limit = asyncio.Semaphore(16)

    async def one(key: tuple[str, str], body: dict[str, Any]) -> None:
        lock = memo.locks.get(key)
        if lock is not None and lock.locked():
            return  # being reconciled right now, from a fresher trigger than this copy
        async with limit:
            try:
                await reconcile(memo, key[0], key[1], body)
            except Exception as exc:  # the next resync tries again
                metrics.ERRORS.labels("resync").inc()
                log.warning(f"{key[0]}/{key[1]}: resync failed: {exc!r}")

    while True:
        await asyncio.sleep(memo.settings.resync_seconds)
        live = [(k, b) for k, b in list(memo.runs.items())
                if (b.get("status") or {}).get("phase") not in TERMINAL]
        metrics.RECONCILES.labels("resync").inc(len(live))
        await asyncio.gather(*(one(k, b) for k, b in live))


async def _post(kube: Kube, run: dict[str, Any], events: list[Event]) -> None:
    """Events on the run, posted ourselves: kopf.event works only inside kopf's own handler
    context, not from the resync loop or a backoff's wake-up."""
    for e in events:
        try:
            await in_thread(kube.create, builders.build_event(run, e.type, e.reason, e.message, stamp(now())))
        except ApiException as exc:  # an Event is worth no retry storm; the status has it all
            log.warning(f"event {e.reason} on {run['metadata']['name']} not posted: {exc.status}")


async def _ensure(kube: Kube, obj: dict[str, Any], uid: str) -> tuple[dict[str, Any] | None, bool]:
    """Create `obj` unless the run owns it already: (object, created?); (None, False) when another
    object holds the name. A child of a deleted run with the same name makes us wait: the garbage
    collector removes it (after KubeRay's finalizer, for a RayJob)."""
    found, created = await in_thread(kube.create, obj)
    if created or uid in owner_uids(found):
        return found, created
    meta = found.get("metadata") or {}
    predecessor = any(r.get("kind") == "EmpoRun" and r.get("name") == obj["metadata"]["labels"][builders.LABEL_RUN]
                      for r in meta.get("ownerReferences") or [])
    if predecessor or meta.get("deletionTimestamp"):
        raise kopf.TemporaryError(f"{obj['kind']} {meta.get('name')} of a deleted run of the same name is "
                                  f"still being deleted; waiting", delay=5)
    return None, False


async def _write_status(kube: Kube, run: dict[str, Any], patch: dict[str, Any]) -> None:
    meta = run["metadata"]
    try:
        await in_thread(kube.patch, *EMPORUN, meta["namespace"], meta["name"], {"status": patch}, "status",
                 meta.get("resourceVersion"))
    except ApiException as exc:
        if exc.status == 409:
            raise Conflict() from exc
        raise


def _wake_later(memo: kopf.Memo, namespace: str, name: str, delay: float) -> None:
    """Reconcile once the backoff ends (the timer would too, up to RESYNC_SECONDS later)."""
    key = (namespace, name)
    if key in memo.wakeups:
        memo.wakeups[key].cancel()

    async def wake() -> None:
        await asyncio.sleep(delay)
        memo.wakeups.pop(key, None)
        try:
            await reconcile(memo, namespace, name)
        except Exception as exc:  # the timer repairs what this could not
            log.warning(f"{namespace}/{name}: reconcile after backoff failed: {exc!r}")

    memo.wakeups[key] = asyncio.get_running_loop().create_task(wake())


async def reconcile(memo: kopf.Memo, namespace: str, name: str, body: dict[str, Any] | None = None) -> None:
    """Reconcile one run, re-reading it when a write finds it changed since it was read. `body` is
    a copy from a watch (possibly stale): it is checked against the server before anything is
    created, patched or deleted. One pass at a time per run: the create handler, a RayJob event, a
    backoff's wake-up and the resync would otherwise each create the same missing children (the
    losers get 409s: wasted requests, about 3% of runs at 10 new runs/s)."""
    async with memo.locks.setdefault((namespace, name), asyncio.Lock()):
        await _reconcile_with_retries(memo, namespace, name, body)


async def _reconcile_with_retries(memo: kopf.Memo, namespace: str, name: str, body: dict[str, Any] | None) -> None:
    for _ in range(CONFLICT_RETRIES):
        fresh = body is None
        run = body if body is not None else await in_thread(memo.kube.get, *EMPORUN, namespace, name)
        body = None
        if run is None or (run.get("metadata") or {}).get("deletionTimestamp"):
            return  # the run is gone; the garbage collector takes its children
        try:
            delay = await _reconcile(memo.kube, memo.settings, run, memo.rayjobs, fresh,
                                     memo.get("pods", {}).get((namespace, name), {}))
        except Conflict:
            continue
        if delay is not None:
            _wake_later(memo, namespace, name, delay)
        return
    raise kopf.TemporaryError(f"{namespace}/{name} kept changing while being reconciled", delay=1)


async def _reconcile(kube: Kube, settings: Settings, run: dict[str, Any],
                     rayjobs: dict[tuple[str, str], dict[str, Any]], fresh: bool,
                     pods: dict[str, dict[str, Any]] | None = None) -> float | None:
    """One pass; returns the seconds until a backoff ends when the run waits for one. `pods`: the
    watch's slim copies of the run's pods."""

    async def act() -> None:
        # A stale copy (a status from before our last write) would start an attempt again or
        # apply an old suspend: side effects only from what the server has now.
        nonlocal fresh
        if not fresh:
            current = await in_thread(kube.get, *EMPORUN, run["metadata"]["namespace"], run["metadata"]["name"])
            if current is None or current["metadata"].get("resourceVersion") != run["metadata"].get("resourceVersion"):
                raise Conflict()
            fresh = True

    meta = run["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    status = dict(run.get("status") or {})
    if status.get("phase") in TERMINAL:
        return None  # a finished run's RayJob may be gone; never start it again
    spec = run.get("spec") or {}
    attempt = int(status.get("restarts", 0))
    rj_name = builders.rayjob_name(name, uid, attempt)
    legacy = status.get("rayJobName")
    if legacy and legacy != rj_name:
        # Named by an earlier operator (<run>, <run>-r1, ...): the live attempt keeps its RayJob.
        old = rayjobs.get((namespace, legacy)) or await in_thread(kube.get, *RAYJOB, namespace, legacy)
        if old is not None and uid in owner_uids(old) and lifecycle.attempt_of(old) == attempt:
            rj_name = legacy

    rayjob = rayjobs.get((namespace, rj_name)) or await in_thread(kube.get, *RAYJOB, namespace, rj_name)
    standing = lifecycle.standing_problem(status)
    # A refusal stands until the spec changes; an operator-settings problem is looked at again.
    steady = rayjob is not None and meta.get("generation") == status.get("observedGeneration") \
        and status.get("rayJobName") == rj_name and (standing is None or standing.permanent)
    if steady:  # nothing the ConfigMap could change: the spec was judged at this generation
        cm, accepted, effective, problem = None, None, settings, standing
        model = None if problem else lifecycle.parse_run(run)
    else:
        cm = await in_thread(kube.get, "v1", "configmaps", namespace, builders.config_name(name))
        if cm is not None and uid not in owner_uids(cm):
            cm = None  # a predecessor's: _ensure waits for it to go
        accepted = lifecycle.accepted_spec(cm)
        effective = lifecycle.pinned(settings, accepted)
        model, problem = lifecycle.validate_run(run, effective)
        if model is not None:
            problem = lifecycle.refused_change(model, accepted, settings)
    if model is None and not steady and accepted is None and problem is not None and problem.permanent:
        # Never started and never can: record it once; kopf does not retry a handler that returns.
        upd = next_status(status, Observation(None, invalid_at_creation=True, problem=problem,
                                              generation=meta.get("generation")), stamp(now()))
        if lifecycle.status_changed(status, upd.patch):
            await act()
            await _write_status(kube, run, upd.patch)
            await _post(kube, run, upd.events)
        return None

    if rayjob is not None and uid not in owner_uids(rayjob):
        rayjob, problem = None, Problem(NAME_TAKEN, f"RayJob {rj_name} exists and is not this run's", permanent=False)
    due = parse_time(status.get("nextAttemptTime"))
    wait = (due - now()).total_seconds() if due else 0.0
    if problem is None and model is not None:
        if accepted is not None and cm is not None:
            data = builders.build_configmap(model, effective)["data"]
            if data != cm.get("data"):  # mutable fields (eval, checkpointing) reach the trainer
                await act()
                await in_thread(kube.patch, "v1", "configmaps", namespace, cm["metadata"]["name"], {"data": data})
        if rayjob is None and wait <= 0:
            await act()
            rayjob = await _start_attempt(kube, run, model, effective, attempt)
        elif rayjob is not None:
            await _sync_rayjob(kube, rayjob, model, act)

    queued = bool(spec.get("queueName"))
    # The operator's default deadline spares queued runs: waiting for Kueue's admission is their normal.
    deadline = spec.get("preRunningDeadlineSeconds") or (None if queued else settings.pre_running_deadline_seconds)
    preemptions = int(status.get("preemptions") or 0)
    obs = Observation(rayjob=rayjob, rayjob_name=rj_name, suspend=bool(spec.get("suspend", False)),
                      restarts=attempt, max_restarts=int(spec.get("maxRestarts", 3)),
                      preempted=(status.get("lastPreemption") or {}).get("attempt") == attempt,
                      preemptions=preemptions,
                      generation=meta.get("generation"), problem=problem, queued=queued,
                      pre_running_expired=_pre_running_expired(rayjob, deadline, status),
                      blocked=await _blocked(kube, rayjob, attempt, pods or {}))
    upd = next_status(status, obs, stamp(now()))
    patch, events = dict(upd.patch), list(upd.events)
    if rayjob is not None and status.get("nextAttemptTime"):
        patch["nextAttemptTime"] = None
    if upd.verdict is not None and upd.verdict.restart:
        # The failed attempt goes (its cluster frees the GPUs during the backoff); the next one is
        # due after the backoff, a time kept in status.
        # A preempted attempt checkpointed its step on purpose: the next one starts at once (its pods
        # wait for room like any), and only failures back off and count against maxRestarts.
        if obs.preempted:
            delay, preemptions = 0.0, preemptions + 1
        else:
            delay = lifecycle.backoff_seconds(attempt + 1 - preemptions, settings.restart_backoff_seconds,
                                              settings.restart_backoff_max_seconds)
        following = next_status({**status, **patch}, Observation(
            None, builders.rayjob_name(name, uid, attempt + 1), suspend=obs.suspend, restarts=attempt + 1,
            max_restarts=obs.max_restarts, generation=obs.generation, queued=obs.queued,
            preemptions=preemptions), stamp(now()))
        patch.update(following.patch)
        patch["preemptions"] = preemptions
        patch["nextAttemptTime"] = stamp(now() + datetime.timedelta(seconds=delay)) if delay else None
        events += following.events
        await act()  # the API server checks the resourceVersion too; KMock in the tests does not
        await _write_status(kube, run, patch)
        await _post(kube, run, events)
        metrics.RESTARTS.inc()
        await in_thread(kube.delete, *RAYJOB, namespace, rj_name, rayjob["metadata"].get("uid"))
        log.info(f"attempt {attempt} of {namespace}/{name} {'was preempted' if obs.preempted else 'failed'}; "
                 f"attempt {attempt + 1} in {delay:.0f}s")
        return delay
    if lifecycle.status_changed(status, patch):
        # The API server refuses a write from a stale copy (resourceVersion); checking first also
        # spares the write and holds where nothing checks it (the tests' emulator).
        await act()
        await _write_status(kube, run, patch)
        await _post(kube, run, events)
    if upd.verdict is not None and upd.verdict.reason == PRE_RUNNING_DEADLINE and rayjob is not None:
        # Release whatever part of the cluster did get scheduled.
        await in_thread(kube.delete, *RAYJOB, namespace, rj_name, rayjob["metadata"].get("uid"))
    return wait if rayjob is None and wait > 0 else None


async def _blocked(kube: Kube, rayjob: dict[str, Any] | None, attempt: int,
                   pods: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
    """What keeps the attempt's pods from running (pod_causes), while its job is not running yet;
    for a queued RayJob Kueue has not admitted, a queue that cannot admit it."""
    if rayjob is None:
        return None
    deployment, job = ((rayjob.get("status") or {}).get(k) or "" for k in ("jobDeploymentStatus", "jobStatus"))
    queue = ((rayjob.get("metadata") or {}).get("labels") or {}).get(builders.KUEUE_QUEUE_LABEL)
    if queue and (rayjob.get("spec") or {}).get("suspend") and deployment in ("", "New", "Suspended"):
        return await _queue_problem(kube, rayjob["metadata"]["namespace"], queue)
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


# Kueue's storage version first (from 0.15; read without its conversion webhook), then the older one.
KUEUE_APIS = ("kueue.x-k8s.io/v1beta2", "kueue.x-k8s.io/v1beta1")


async def _queue_problem(kube: Kube, namespace: str, queue: str) -> tuple[str, str] | None:
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


KUEUE_NOT_INSTALLED = "KueueNotInstalled"
LOCAL_QUEUE_NOT_FOUND = "LocalQueueNotFound"


def _pre_running_expired(rayjob: dict[str, Any] | None, deadline: int | None, status: dict[str, Any]) -> bool:
    """Whether the attempt has waited longer than `deadline` to run: since its RayJob was created,
    or since the user lifted a suspend (a resumed run waits for its GPUs again)."""
    created = parse_time(((rayjob or {}).get("metadata") or {}).get("creationTimestamp"))
    if not deadline or created is None:
        return False
    suspended = next((c for c in status.get("conditions") or [] if c.get("type") == "Suspended"), {})
    resumed = parse_time(suspended.get("lastTransitionTime")) if suspended.get("status") == "False" else None
    since = max(created, resumed) if resumed else created
    return (now() - since).total_seconds() > deadline


async def _start_attempt(kube: Kube, run: dict[str, Any], model: EmpoRun, settings: Settings,
                         attempt: int) -> dict[str, Any] | None:
    """Create what attempt `attempt` needs, in waves (builders.creation_waves); its RayJob, or None
    when another object holds a name."""
    uid = run["metadata"]["uid"]
    children = build_children(model, settings, attempt)
    kopf.adopt(children, owner=run)
    rayjob = None
    for wave in builders.creation_waves(children):
        results = await asyncio.gather(*(_ensure(kube, child, uid) for child in wave))
        for child, (obj, created) in zip(wave, results):
            if child["kind"] == "RayJob":
                rayjob = obj
                if created:
                    metrics.RAYJOBS_CREATED.inc()
                    if (why := lifecycle.ray_auth_dropped(obj)) is not None:
                        log.warning(f"{model.namespace}/{model.name}: {why}")
                        await _post(kube, run, [Event("Warning", lifecycle.RAY_AUTH_DROPPED, why)])
    if attempt:  # a failed attempt whose delete was lost (an error, an operator restart)
        previous = builders.rayjob_name(model.name, uid, attempt - 1)
        old = await in_thread(kube.get, *RAYJOB, model.namespace, previous)
        if old is not None and uid in owner_uids(old):
            await in_thread(kube.delete, *RAYJOB, model.namespace, previous, old["metadata"]["uid"])
    return rayjob


async def _sync_rayjob(kube: Kube, rayjob: dict[str, Any], model: EmpoRun,
                       act: Callable[[], Awaitable[None]]) -> None:
    """The RayJob's mutable parts follow the spec: suspend, and Kueue's queue label."""
    meta, rj_spec = rayjob["metadata"], rayjob.get("spec") or {}
    patch: dict[str, Any] = {}
    queue = model.spec.queue_name
    suspended = bool(rj_spec.get("suspend", False))
    # Kueue's webhook refuses to move a running (admitted) RayJob to another queue, or to put it in
    # one: the label follows the spec while the RayJob is suspended (or being suspended now), and
    # the new queue applies once Kueue or the user suspends it, or with the next attempt. Leaving a
    # queue is allowed at any time.
    if (meta.get("labels") or {}).get(builders.KUEUE_QUEUE_LABEL) != queue and \
            (suspended or model.spec.suspend or queue is None):
        patch["metadata"] = {"labels": {builders.KUEUE_QUEUE_LABEL: queue}}  # None removes it
    # Kueue unsuspends a queued RayJob when it admits it; lifting its suspend ourselves would start
    # the cluster without a quota.
    if model.spec.suspend and not suspended:
        patch["spec"] = {"suspend": True}
    elif not model.spec.suspend and suspended and not queue:
        patch["spec"] = {"suspend": False}
    if patch:
        await act()
        await in_thread(kube.patch, *RAYJOB, meta["namespace"], meta["name"], patch)


# ---------------------------------------------------------------------------------------------
# what wakes reconcile
# ---------------------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=5)
@kopf.on.create(GROUP, VERSION, PLURAL, backoff=5)
@metrics.instrumented
async def reconcile_run(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await reconcile(memo, body.meta["namespace"], body.meta["name"], dict(body))


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", backoff=5)
@metrics.instrumented
async def spec_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await reconcile(memo, body.meta["namespace"], body.meta["name"], dict(body))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def run_seen(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep the watch's latest copy of every run for the resync (no request, no finalizer)."""
    key = (body.meta["namespace"], body.meta["name"])
    if type == "DELETED":
        memo.runs.pop(key, None)
        memo.pods.pop(key, None)
        memo.locks.pop(key, None)
    else:
        memo.runs[key] = dict(body)


@kopf.on.event("", "v1", "pods", labels={builders.LABEL_RUN: kopf.PRESENT})
async def pod_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep a slim copy of each pod of a run; reconcile the run when what keeps it from running
    changes (a pod turned Unschedulable, ImagePullBackOff, OOMKilled, ... or recovered)."""
    namespace, labels = body.meta["namespace"], body.meta.get("labels") or {}
    key, name = (namespace, labels[builders.LABEL_RUN]), body.meta["name"]
    pods = memo.pods.setdefault(key, {})
    before = pod_causes.first_cause([pods[name]]) if name in pods else None
    if type == "DELETED":
        last = pods.pop(name, None)
        # The DELETED event carries the pod's final state (Failed, Evicted) even if the watch missed
        # the update that set it.
        gone = (pod_causes.departed(pod_causes.slim_pod(dict(body))) or (last and pod_causes.departed(last))
                if key in memo.runs else None)
        if gone is not None:  # its cause outlives it (an evicted pod KubeRay replaces); keep the latest
            for other in [n for n, p in pods.items() if p.get("gone")]:
                del pods[other]
            pods[name] = gone
        after = pod_causes.first_cause([gone]) if gone else None
    else:
        pods[name] = pod_causes.slim_pod(dict(body))
        after = pod_causes.first_cause([pods[name]])
    if not pods:
        memo.pods.pop(key, None)
    run = memo.runs.get(key)
    if before != after and run is not None and (run.get("status") or {}).get("phase") not in TERMINAL:
        await reconcile(memo, namespace, key[1], run)


@kopf.on.event("ray.io", "v1", "rayjobs", labels={builders.LABEL_RUN: kopf.PRESENT})
@metrics.instrumented
async def rayjob_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    namespace = body.meta["namespace"]
    if type == "DELETED":
        memo.rayjobs.pop((namespace, body.meta["name"]), None)
    else:
        memo.rayjobs[(namespace, body.meta["name"])] = dict(body)
    owner = next((r for r in body.meta.get("ownerReferences") or [] if r.get("kind") == "EmpoRun"), None)
    if owner is None:
        return
    # The watch's copy when there is one (kopf replays every RayJob when a watch reconnects; a GET
    # per RayJob each time adds up); reconcile checks a copy before acting on it.
    run = memo.runs.get((namespace, owner["name"])) or await in_thread(memo.kube.get, *EMPORUN, namespace, owner["name"])
    if run is None or run["metadata"].get("uid") != owner.get("uid"):
        return  # a deleted run's RayJob (the garbage collector takes it), not the new run of that name
    if type != "DELETED":
        attempt = lifecycle.attempt_of(body)
        if attempt is not None and attempt < int((run.get("status") or {}).get("restarts", 0)):
            # A replaced attempt left over by a crash.
            await in_thread(memo.kube.delete, *RAYJOB, namespace, body.meta["name"], body.meta.get("uid"))
            return
    await reconcile(memo, namespace, owner["name"], run)
