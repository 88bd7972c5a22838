"""kopf handlers: the watches' copies, and what wakes a reconcile pass (one per run at a time).

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

The pass itself, in named steps, is reconcile.reconcile_pass.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

import kopf

from empo_api.models import GROUP, PLURAL, VERSION

from . import builders, lifecycle, metrics, pod_causes
from .kube import Kube, in_thread
from .reconcile import EMPORUN, RAYJOB, Conflict, reconcile_pass
from .settings import from_env
from .status import TERMINAL

log = logging.getLogger(__name__)
CONFLICT_RETRIES = 5


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
            delay = await reconcile_pass(memo.kube, memo.settings, run, memo.rayjobs, fresh,
                                         memo.get("pods", {}).get((namespace, name), {}))
        except Conflict:
            continue
        if delay is not None:
            _wake_later(memo, namespace, name, delay)
        return
    raise kopf.TemporaryError(f"{namespace}/{name} kept changing while being reconciled", delay=1)


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
    """Keep the watch's latest copy of every run for the resync (no request, no finalizer); reconcile
    a run whose trainer has just reported a preemption (its attempt may end before KubeRay knows)."""
    key = (body.meta["namespace"], body.meta["name"])
    if type == "DELETED":
        memo.runs.pop(key, None)
        memo.pods.pop(key, None)
        memo.locks.pop(key, None)
        return
    before = ((memo.runs.get(key) or {}).get("status") or {}).get("lastPreemption")
    memo.runs[key] = run = dict(body)
    status = run.get("status") or {}
    # Only for a run reconciled before (it has a lock): the watch's first listing replays every run,
    # which the resume handler reconciles anyway.
    if key in memo.locks and status.get("lastPreemption") not in (None, before) and status.get("phase") not in TERMINAL:
        await reconcile(memo, key[0], key[1], run)


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
