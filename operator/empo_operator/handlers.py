"""kopf handlers: gather inputs, call the pure functions, do the I/O. Nothing else lives here.

- EmpoRun created or operator (re)started: create the children of the current attempt (409 on an
  existing child is fine: no duplicates after a restart) and mirror the RayJob.
- EmpoRun spec changed: refuse immutable changes (Stalled), else update the ConfigMap and the
  RayJob's suspend.
- RayJob changed: mirror it into the EmpoRun's status; on a failed attempt, delete it and start the
  next one after a backoff, until maxRestarts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from typing import Any

import kopf

from empo_api.models import API_VERSION, GROUP, PLURAL, VERSION, EmpoRun

from . import builders, lifecycle, metrics
from .kube import Kube
from .settings import Settings, from_env
from .status import TERMINAL, Event, Observation, Problem, next_status

log = logging.getLogger(__name__)
RAYJOB = ("ray.io/v1", "rayjobs")
EMPORUN = (API_VERSION, PLURAL)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's bookkeeping in annotations: the EmpoRun status schema has no room for status.kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.reporting_component = "empo-operator"
    settings.posting.level = logging.WARNING  # only our own kopf.event calls become Events
    settings.execution.max_workers = 32  # API calls run in threads; many runs reconcile at once
    if "settings" not in memo:
        memo.settings = from_env()
    if "kube" not in memo:
        memo.kube = await asyncio.to_thread(Kube)


def _post(body: Any, events: list[Event]) -> None:
    for e in events:
        kopf.event(body, type=e.type, reason=e.reason, message=e.message[:1024])


def _observation(run_body: Any, rayjob: dict[str, Any] | None, rayjob_name: str | None,
                 problem: Problem | None = None, restarts: int | None = None) -> Observation:
    spec = run_body.get("spec") or {}
    status = run_body.get("status") or {}
    return Observation(
        rayjob=rayjob,
        rayjob_name=rayjob_name,
        suspend=bool(spec.get("suspend", False)),
        restarts=status.get("restarts", 0) if restarts is None else restarts,
        max_restarts=int(spec.get("maxRestarts", 3)),
        generation=(run_body.get("metadata") or {}).get("generation"),
        problem=problem if problem is not None else lifecycle.standing_problem(status),
        queued=bool(spec.get("queueName")),
    )


async def _create_rayjob(kube: Kube, owner: Any, run: EmpoRun, settings: Settings, attempt: int
                         ) -> dict[str, Any]:
    rayjob = builders.build_rayjob(run, settings, attempt)
    kopf.adopt(rayjob, owner=owner)
    obj, created = await asyncio.to_thread(kube.create, rayjob)
    if created:
        metrics.RAYJOBS_CREATED.inc()
    return obj


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@metrics.instrumented
async def reconcile_run(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    settings: Settings = memo.settings
    kube: Kube = memo.kube
    status = dict(body.get("status") or {})
    run, problem = lifecycle.validate_run(body, settings)
    if run is None:
        # Record and return: kopf does not retry a handler that returned, so no retry storm.
        upd = next_status(status, Observation(None, invalid_at_creation=True, problem=problem,
                                              generation=body.meta.get("generation")), now())
        if lifecycle.status_changed(status, upd.patch):
            patch.status.update(upd.patch)
            _post(body, upd.events)
        return
    if status.get("phase") in TERMINAL:
        return  # a finished run's RayJob may be gone (TTL); never start it again
    attempt = int(status.get("restarts", 0))
    children = builders.build_children(run, settings, attempt)
    kopf.adopt(children, owner=body)
    # ConfigMap, ServiceAccount, Role, RoleBinding together; the RayJob once what it uses exists.
    await asyncio.gather(*(asyncio.to_thread(kube.create, child) for child in children[:-1]))
    if attempt:  # resumed during a restart's backoff: the failed attempt goes, the next one starts
        await asyncio.to_thread(kube.delete, *RAYJOB, run.namespace, builders.rayjob_name(run.name, attempt - 1))
    _, created = await asyncio.to_thread(kube.create, children[-1])
    if created:
        metrics.RAYJOBS_CREATED.inc()
    # No status write here: the RayJob's watch event (ADDED now, or the initial listing after an
    # operator restart) reaches rayjob_changed, the one writer of the mirrored status. A second
    # writer here could land its older view after a fast failure and undo a restart.


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@metrics.instrumented
async def spec_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    settings: Settings = memo.settings
    kube: Kube = memo.kube
    name, namespace = body.meta["name"], body.meta["namespace"]
    # The status as it is now (the event's copy may predate a restart that rayjob_changed wrote).
    status = dict(((await asyncio.to_thread(kube.get, *EMPORUN, namespace, name)) or body).get("status") or {})
    if status.get("phase") in TERMINAL:
        return
    rayjob_name = status.get("rayJobName") or builders.rayjob_name(name, int(status.get("restarts", 0)))
    run, problem = lifecycle.validate_run(body, settings)
    if run is not None:
        cm = await asyncio.to_thread(kube.get, "v1", "configmaps", namespace, builders.config_name(name))
        problem = lifecycle.refused_change(run, lifecycle.accepted_spec(cm), settings)
    rayjob = await asyncio.to_thread(kube.get, *RAYJOB, namespace, rayjob_name)
    if problem is None and run is not None:
        # Mutable fields only: eval settings reach the trainer through the ConfigMap, suspend
        # reaches KubeRay; the rest applies from the next attempt on.
        cm_patch = {"data": builders.build_configmap(run, settings)["data"]}
        await asyncio.to_thread(kube.patch, "v1", "configmaps", namespace, builders.config_name(name), cm_patch)
    obs = _observation(body, rayjob, rayjob_name, problem=problem)
    if problem is None:
        obs = dataclasses.replace(obs, problem=None)  # an accepted spec clears an earlier refusal
    upd = next_status(status, obs, now())
    if lifecycle.status_changed(status, upd.patch):
        # Written now, not through kopf's deferred patch: the RayJob event our suspend patch
        # causes reads the run next and must see this (e.g. a Stalled refusal) already.
        await asyncio.to_thread(kube.patch, *EMPORUN, namespace, name, {"status": upd.patch}, "status")
        _post(body, upd.events)
    if problem is None and run is not None and rayjob is not None \
            and bool((rayjob.get("spec") or {}).get("suspend", False)) != run.spec.suspend:
        await asyncio.to_thread(kube.patch, *RAYJOB, namespace, rayjob_name, {"spec": {"suspend": run.spec.suspend}})


@kopf.on.event("ray.io", "v1", "rayjobs", labels={builders.LABEL_RUN: kopf.PRESENT})
@metrics.instrumented
async def rayjob_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    if type == "DELETED":
        return
    settings: Settings = memo.settings
    kube: Kube = memo.kube
    namespace = body.meta["namespace"]
    run_name = body.meta["labels"][builders.LABEL_RUN]
    run_body = await asyncio.to_thread(kube.get, *EMPORUN, namespace, run_name)
    if run_body is None or (run_body.get("metadata") or {}).get("deletionTimestamp"):
        return  # the run is gone; its children go with it
    status = run_body.get("status") or {}
    attempt = int(status.get("restarts", 0))
    current = builders.rayjob_name(run_name, attempt)
    if body.meta["name"] != current:
        older = lifecycle.attempt_of(body)
        if older is not None and older < attempt:  # a replaced attempt left over by a crash
            await asyncio.to_thread(kube.delete, *RAYJOB, namespace, body.meta["name"])
        return
    upd = next_status(status, _observation(run_body, dict(body), current), now())
    if lifecycle.status_changed(status, upd.patch):
        await asyncio.to_thread(kube.patch, *EMPORUN, namespace, run_name, {"status": upd.patch}, "status")
        _post(run_body, upd.events)
    if upd.verdict is not None and upd.verdict.restart:
        await _restart(kube, settings, run_body, {**status, **upd.patch}, attempt + 1, logger)


async def _restart(kube: Kube, settings: Settings, run_body: dict[str, Any], status: dict[str, Any],
                   attempt: int, logger: Any) -> None:
    """Replace the failed attempt by attempt `attempt` after the backoff (the trainer resumes from LATEST)."""
    namespace, name = run_body["metadata"]["namespace"], run_body["metadata"]["name"]
    new_name = builders.rayjob_name(name, attempt)
    upd = next_status(status, _observation(run_body, None, new_name, restarts=attempt), now())
    await asyncio.to_thread(kube.patch, *EMPORUN, namespace, name, {"status": upd.patch}, "status")
    # Delete first: the failed attempt's cluster frees its GPUs during the backoff.
    await asyncio.to_thread(kube.delete, *RAYJOB, namespace, builders.rayjob_name(name, attempt - 1))
    metrics.RESTARTS.inc()
    delay = lifecycle.backoff_seconds(attempt, settings.restart_backoff_seconds, settings.restart_backoff_max_seconds)
    logger.info(f"attempt {attempt - 1} of {namespace}/{name} failed; attempt {attempt} in {delay:.0f}s")
    await asyncio.sleep(delay)
    # Read again: the user may have suspended or deleted the run while we waited.
    fresh = await asyncio.to_thread(kube.get, *EMPORUN, namespace, name)
    if fresh is None or (fresh.get("metadata") or {}).get("deletionTimestamp"):
        return
    if int((fresh.get("status") or {}).get("restarts", 0)) != attempt:
        return  # someone else (a resumed operator) moved on already
    run, problem = lifecycle.validate_run(fresh, settings)
    if run is None:
        return
    await _create_rayjob(kube, fresh, run, settings, attempt)
