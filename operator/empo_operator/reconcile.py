"""One reconcile pass over one run, in named steps; handlers wires kopf, the watches and the timers to it.

`reconcile_pass` reads as the steps it takes:
1. `_current_attempt`: which attempt is live (status.restarts) and its RayJob, if any;
2. `_judge_spec`: the spec parsed, defaulted once and checked against the spec the run was accepted
   with; `_record_refusal` ends the pass of a run that never started and never can;
3. `_ensure_children`, for a RayJob this run owns (`_owned_rayjob`): the ConfigMap follows the
   mutable fields, a missing attempt is started once its backoff ended (`_backoff_left`), the
   live RayJob follows suspend and queue;
4. `_observe_attempt`: what the attempt's RayJob and pods say, as a status.Observation;
5. `_restart_attempt` when the attempt failed or was preempted and may run again; otherwise
   `_mirror_status`, and `_release_expired` when the pre-running deadline passed.

Words used across it, explained once:
- body: the EmpoRun as read. A watch's copy may be stale; the pass is `fresh` once the body is
  checked against the server, and side effects come only from a fresh body (`_Pass.confirm`).
- attempt: status.restarts; attempt n of a run is the RayJob builders.rayjob_name(run, uid, n).
- accepted spec: the spec, operator defaults applied, recorded in the run's ConfigMap when its first
  attempt starts and kept up with the mutable fields after. It is the trainer's input and the
  operator's record of what the run was accepted with: a live run keeps its defaults from it
  (defaults.Defaults.of), so an operator upgrade does not change its next attempt.
- judged: the run parsed, defaulted (once per pass) and compared with the accepted spec
  (lifecycle.validate_run); the builders receive that defaulted run and apply no default themselves.
- steady: the attempt's RayJob exists and the spec was judged at this generation
  (status.observedGeneration): nothing in the ConfigMap could change the judgement, so none is read.
- standing problem: a refusal recorded in status (Stalled) that stands until the spec changes.

Identity: children are found by name and accepted only if their ownerReference carries the run's
uid; RayJob names carry the uid too (builders.rayjob_name), deletes carry a uid precondition and
status writes the resourceVersion they were computed from (a conflict re-reads and recomputes).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from empo_api.models import API_VERSION, PLURAL, EmpoRun

from . import builders, lifecycle, metrics, observe
from .children import build_children
from .clock import now, parse_time, stamp
from .kube import Kube, in_thread, owner_uids
from .settings import Settings
from .status import PRE_RUNNING_DEADLINE, TERMINAL, Event, Observation, Problem, StatusUpdate, next_status

log = logging.getLogger(__name__)
RAYJOB = ("ray.io/v1", "rayjobs")
EMPORUN = (API_VERSION, PLURAL)
NAME_TAKEN = "NameTaken"


class Conflict(Exception):
    """The run changed between our read and our write (the trainer's progress, a user's edit)."""


@dataclass
class _Pass:
    """The body one pass works from, and the client it acts with."""

    kube: Kube
    run: dict[str, Any]
    fresh: bool

    async def confirm(self) -> None:
        """Before a side effect: a stale copy (a status from before our last write) would start an
        attempt again or apply an old suspend, so act only on what the server has now."""
        if self.fresh:
            return
        meta = self.run["metadata"]
        current = await in_thread(self.kube.get, *EMPORUN, meta["namespace"], meta["name"])
        if current is None or current["metadata"].get("resourceVersion") != meta.get("resourceVersion"):
            raise Conflict()
        self.fresh = True


@dataclass(frozen=True)
class _Judged:
    """The spec as this pass judged it. `run`: defaulted (what the builders take) when judged now;
    for a steady run, parsed as it stands (only suspend and queueName are read from it)."""

    run: EmpoRun | None
    problem: Problem | None
    configmap: dict[str, Any] | None = None
    accepted: dict[str, Any] | None = None
    steady: bool = False

    @property
    def never_startable(self) -> bool:
        """Refused for good before it was ever accepted: nothing to build, a status to record."""
        return self.run is None and not self.steady and self.accepted is None \
            and self.problem is not None and self.problem.permanent


async def reconcile_pass(kube: Kube, settings: Settings, run: dict[str, Any],
                         rayjobs: dict[tuple[str, str], dict[str, Any]], fresh: bool,
                         pods: dict[str, dict[str, Any]] | None = None) -> float | None:
    """One pass; returns the seconds until a backoff ends when the run waits for one. `rayjobs`,
    `pods`: the watches' copies (pods slimmed by pod_causes); Conflict when the run changed."""
    status = dict(run.get("status") or {})
    if status.get("phase") in TERMINAL:
        return None  # a finished run's RayJob may be gone; never start it again
    run_pass = _Pass(kube, run, fresh)
    attempt = int(status.get("restarts", 0))
    rj_name, rayjob = await _current_attempt(kube, run, status, rayjobs, attempt)
    judged = await _judge_spec(kube, settings, run, status, rayjob, rj_name)
    if judged.never_startable:
        await _record_refusal(run_pass, status, judged.problem)
        return None
    rayjob, problem = _owned_rayjob(run, rayjob, rj_name, judged.problem)
    wait = _backoff_left(status)
    if problem is None and judged.run is not None:
        rayjob = await _ensure_children(run_pass, settings, judged, rayjob, attempt, wait)
    obs = await _observe_attempt(kube, settings, run, status, rayjob, rj_name, attempt, problem, pods or {})
    upd = next_status(status, obs, stamp(now()))
    patch = dict(upd.patch)
    if rayjob is not None and status.get("nextAttemptTime"):
        patch["nextAttemptTime"] = None
    if upd.verdict is not None and upd.verdict.restart:
        return await _restart_attempt(run_pass, settings, status, obs, patch, list(upd.events))
    await _mirror_status(run_pass, status, patch, upd.events)
    await _release_expired(kube, upd, obs)
    return wait if rayjob is None and wait > 0 else None


async def _current_attempt(kube: Kube, run: dict[str, Any], status: dict[str, Any],
                           rayjobs: dict[tuple[str, str], dict[str, Any]],
                           attempt: int) -> tuple[str, dict[str, Any] | None]:
    """The live attempt's RayJob name, and the RayJob when it exists (the watch's copy first)."""
    meta = run["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    rj_name = builders.rayjob_name(name, uid, attempt)
    legacy = status.get("rayJobName")
    if legacy and legacy != rj_name:
        # Named by an earlier operator (<run>, <run>-r1, ...): the live attempt keeps its RayJob.
        old = rayjobs.get((namespace, legacy)) or await in_thread(kube.get, *RAYJOB, namespace, legacy)
        if old is not None and uid in owner_uids(old) and lifecycle.attempt_of(old) == attempt:
            rj_name = legacy
    return rj_name, rayjobs.get((namespace, rj_name)) or await in_thread(kube.get, *RAYJOB, namespace, rj_name)


async def _judge_spec(kube: Kube, settings: Settings, run: dict[str, Any], status: dict[str, Any],
                      rayjob: dict[str, Any] | None, rj_name: str) -> _Judged:
    """The run judged against the spec it was accepted with (its ConfigMap), unless steady."""
    meta = run["metadata"]
    standing = lifecycle.standing_problem(status)
    # A refusal stands until the spec changes; an operator-settings problem is looked at again.
    if rayjob is not None and meta.get("generation") == status.get("observedGeneration") \
            and status.get("rayJobName") == rj_name and (standing is None or standing.permanent):
        return _Judged(None if standing else lifecycle.parse_run(run), standing, steady=True)
    cm = await in_thread(kube.get, "v1", "configmaps", meta["namespace"], builders.config_name(meta["name"]))
    if cm is not None and meta["uid"] not in owner_uids(cm):
        cm = None  # a predecessor's: _ensure waits for it to go
    accepted = lifecycle.accepted_spec(cm)
    model, problem = lifecycle.validate_run(run, settings, accepted)
    return _Judged(model, problem, cm, accepted)


def _owned_rayjob(run: dict[str, Any], rayjob: dict[str, Any] | None, rj_name: str,
                  problem: Problem | None) -> tuple[dict[str, Any] | None, Problem | None]:
    """The attempt's RayJob if it is this run's; another object holding its name is a problem."""
    if rayjob is not None and run["metadata"]["uid"] not in owner_uids(rayjob):
        return None, Problem(NAME_TAKEN, f"RayJob {rj_name} exists and is not this run's", permanent=False)
    return rayjob, problem


def _backoff_left(status: dict[str, Any]) -> float:
    """Seconds until the next attempt is due (status.nextAttemptTime); <= 0 when it is."""
    due = parse_time(status.get("nextAttemptTime"))
    return (due - now()).total_seconds() if due else 0.0


async def _record_refusal(run_pass: _Pass, status: dict[str, Any], problem: Problem) -> None:
    """A run that never started and never can: its refusal recorded once (kopf does not retry a
    handler that returns)."""
    run = run_pass.run
    upd = next_status(status, Observation(None, invalid_at_creation=True, problem=problem,
                                          generation=run["metadata"].get("generation")), stamp(now()))
    await _mirror_status(run_pass, status, upd.patch, upd.events)


async def _ensure_children(run_pass: _Pass, settings: Settings, judged: _Judged, rayjob: dict[str, Any] | None,
                           attempt: int, wait: float) -> dict[str, Any] | None:
    """The children follow the judged run; the attempt's RayJob afterwards (None while it waits)."""
    kube, model = run_pass.kube, judged.run
    assert model is not None
    if judged.accepted is not None and judged.configmap is not None:
        data, recorded = builders.build_configmap(model)["data"], judged.configmap.get("data") or {}
        if data != recorded:  # mutable fields (eval, checkpointing) reach the trainer
            gone = {key: None for key in recorded if key not in data}  # null removes a key (merge patch)
            await run_pass.confirm()
            await in_thread(kube.patch, "v1", "configmaps", run_pass.run["metadata"]["namespace"],
                            judged.configmap["metadata"]["name"], {"data": {**data, **gone}})
    if rayjob is None and wait <= 0:
        await run_pass.confirm()
        return await _start_attempt(kube, run_pass.run, model, settings, attempt)
    if rayjob is not None:
        await _sync_rayjob(run_pass, rayjob, model)
    return rayjob


async def _observe_attempt(kube: Kube, settings: Settings, run: dict[str, Any], status: dict[str, Any],
                           rayjob: dict[str, Any] | None, rj_name: str, attempt: int, problem: Problem | None,
                           pods: dict[str, dict[str, Any]]) -> Observation:
    spec = run.get("spec") or {}
    queued = bool(spec.get("queueName"))
    # The operator's default deadline spares queued runs: waiting for Kueue's admission is their normal.
    deadline = spec.get("preRunningDeadlineSeconds") or (None if queued else settings.pre_running_deadline_seconds)
    return Observation(rayjob=rayjob, rayjob_name=rj_name, suspend=bool(spec.get("suspend", False)),
                       restarts=attempt, max_restarts=int(spec.get("maxRestarts", 3)),
                       preempted=observe.preempted(status, attempt),
                       stopped_early=observe.stopped_early(status, attempt, rayjob, queued),
                       preemptions=int(status.get("preemptions") or 0),
                       generation=run["metadata"].get("generation"), problem=problem, queued=queued,
                       pre_running_expired=observe.pre_running_expired(rayjob, deadline, status),
                       blocked=await observe.blocked(kube, rayjob, attempt, pods))


async def _restart_attempt(run_pass: _Pass, settings: Settings, status: dict[str, Any], obs: Observation,
                           patch: dict[str, Any], events: list[Event]) -> float:
    """The failed attempt goes (its cluster frees the GPUs during the backoff); the next one is due
    after the backoff, a time kept in status. A preempted attempt checkpointed its step on purpose:
    the next one starts at once (its pods wait for room like any), and only failures back off and
    count against maxRestarts. Returns the backoff."""
    meta = run_pass.run["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    attempt, preemptions = obs.restarts, obs.preemptions
    if obs.preempted:
        delay, preemptions = 0.0, preemptions + 1
    else:
        delay = lifecycle.backoff_seconds(attempt + 1 - preemptions, settings.restart_backoff_seconds,
                                          settings.restart_backoff_max_seconds)
    following = next_status({**status, **patch}, Observation(
        None, builders.rayjob_name(name, uid, attempt + 1), suspend=obs.suspend, restarts=attempt + 1,
        max_restarts=obs.max_restarts, generation=obs.generation, queued=obs.queued,
        preemptions=preemptions), stamp(now()))
    patch = {**patch, **following.patch, "preemptions": preemptions,
             "nextAttemptTime": stamp(now() + datetime.timedelta(seconds=delay)) if delay else None}
    await run_pass.confirm()  # the API server checks the resourceVersion too; KMock in the tests does not
    await _write_status(run_pass.kube, run_pass.run, patch)
    await _post(run_pass.kube, run_pass.run, events + following.events)
    metrics.RESTARTS.inc()
    assert obs.rayjob is not None  # a verdict is about an attempt's RayJob
    await in_thread(run_pass.kube.delete, *RAYJOB, namespace, obs.rayjob_name, obs.rayjob["metadata"].get("uid"))
    log.info(f"attempt {attempt} of {namespace}/{name} {'was preempted' if obs.preempted else 'failed'}; "
             f"attempt {attempt + 1} in {delay:.0f}s")
    return delay


async def _mirror_status(run_pass: _Pass, status: dict[str, Any], patch: dict[str, Any], events: list[Event]) -> None:
    """Write the status and post its Events when they change anything. The API server refuses a
    write from a stale copy (resourceVersion); confirming first also spares the write, and holds
    where nothing checks it (the tests' emulator)."""
    if lifecycle.status_changed(status, patch):
        await run_pass.confirm()
        await _write_status(run_pass.kube, run_pass.run, patch)
        await _post(run_pass.kube, run_pass.run, events)


async def _release_expired(kube: Kube, upd: StatusUpdate, obs: Observation) -> None:
    """An attempt past its pre-running deadline releases whatever part of the cluster got scheduled."""
    if upd.verdict is not None and upd.verdict.reason == PRE_RUNNING_DEADLINE and obs.rayjob is not None:
        meta = obs.rayjob["metadata"]
        await in_thread(kube.delete, *RAYJOB, meta["namespace"], obs.rayjob_name, meta.get("uid"))


async def _start_attempt(kube: Kube, run: dict[str, Any], model: EmpoRun, settings: Settings,
                         attempt: int) -> dict[str, Any] | None:
    """Create what attempt `attempt` needs, in waves (builders.creation_waves), from the defaulted
    run; its RayJob, or None when another object holds a name."""
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


async def _sync_rayjob(run_pass: _Pass, rayjob: dict[str, Any], model: EmpoRun) -> None:
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
        await run_pass.confirm()
        await in_thread(run_pass.kube.patch, *RAYJOB, meta["namespace"], meta["name"], patch)


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


async def _post(kube: Kube, run: dict[str, Any], events: list[Event]) -> None:
    """Events on the run, posted ourselves: kopf.event works only inside kopf's own handler
    context, not from the resync loop or a backoff's wake-up."""
    for e in events:
        try:
            await in_thread(kube.create, builders.build_event(run, e.type, e.reason, e.message, stamp(now())))
        except ApiException as exc:  # an Event is worth no retry storm; the status has it all
            log.warning(f"event {e.reason} on {run['metadata']['name']} not posted: {exc.status}")
