"""The run driver: one EmpoRun, start to finish, on a local Ray or inside a KubeRay RayJob.

It starts (or joins) Ray, places sampler and learner actors by the placement plan, streams the
learner's per-step events into metrics.jsonl, a progress bar and the EmpoRun status, and finishes
with a summary. The learner owns checkpoints, so an interrupted run resumes from LATEST.
A SIGTERM (or a preemption request file) stops the run after the step in progress, with a
checkpoint of it: preemption.py.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from empo_api.errors import SpecError
from empo_api.models import EmpoRun
from empo_api.placement import plan_placement

from . import metrics_exporter, model_staging, preemption, tracking
from .data import DatasetError
from .model_source import ModelSourceError
from .storage import StorageError
from .distributed import node_local_ranks
from . import lifeline
from .grpo_settings import total_steps
from .status_reporter import ProgressReporter


@dataclass
class RunSummary:
    name: str
    namespace: str
    storage_uri: str
    steps: int
    total_steps: int
    resumed_from_step: int | None
    latest_checkpoint: str | None
    final_eval: dict[str, Any] | None
    seconds: float
    first_eval: dict[str, Any] | None = None
    last_record: dict[str, Any] = field(default_factory=dict)
    preempted: bool = False  # stopped on request after a checkpoint: exit EXIT_PREEMPTED, run again

    def lines(self) -> list[str]:
        out = [
            f"run {self.namespace}/{self.name}: {self.steps}/{self.total_steps} steps in {self.seconds:.0f}s"
            + (f" (resumed from step {self.resumed_from_step})" if self.resumed_from_step is not None else "")
            + (" (preempted)" if self.preempted else ""),
            f"  storage:    {self.storage_uri}",
            f"  checkpoint: {self.latest_checkpoint}",
            f"  metrics:    {self.storage_uri}/metrics.jsonl",
        ]
        if not self.preempted:  # a preempted attempt writes no report: the one that finishes does
            out.append(f"  report:     {self.storage_uri}/report.html")
        r = self.last_record
        if r:
            out.append(f"  last step:  reward {r.get('reward', float('nan')):.3f}, semantic entropy "
                       f"{r.get('semantic_entropy', float('nan')):.3f}, filtered {r.get('filtered_fraction', 0):.2f}")
        if self.final_eval:
            # With evals only at the end, the first eval event *is* the final one (a copy, through
            # the Ray queue): comparing it with itself printed every figure twice.
            first = self.first_eval or {}
            before = first.get("accuracy", {}) if first.get("step") != self.final_eval.get("step") else {}
            acc = ", ".join(f"{k} {before[k]:.3f} (step {self.first_eval['step']}) -> {v:.3f}" if k in before
                            else f"{k} {v:.3f}" for k, v in self.final_eval.get("accuracy", {}).items())
            out.append(f"  eval:       {acc} at step {self.final_eval.get('step')}")
        return out


def _local_ray_env() -> None:
    """A local cluster enables token auth and writes the token to ~/.ray unless one is given: give
    it a fresh one through the environment (inherited by Ray's own processes), so nothing lands in
    the home folder or the repo. Must run before Ray is imported: Ray reads the mode at import."""
    if not os.environ.get("RAY_ADDRESS"):
        lifeline.arm()
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
        # Loopback only: Ray replaces 127.0.0.1 by the machine's routable address unless multi-node
        # clusters are off, and then its GCS, raylet, workers and agents listen on every interface.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # No Prometheus exporters: they serve without authentication (docs/security.md).
        os.environ.setdefault("RAY_enable_metrics_collection", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _init_ray(num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):  # inside a RayJob: join the cluster KubeRay started
        ray.init(address="auto", log_to_driver=True)
        return
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=True,
             configure_logging=False, _node_ip_address="127.0.0.1")


def _work_dir(run: EmpoRun) -> Path:
    from .model_source import cache_dir

    return cache_dir() / "runs" / run.namespace / run.name


class _ProgressBar:
    """A tqdm bar with the numbers a person watches: reward, semantic entropy, tokens/s, ETA."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="EMPO", unit="step", file=sys.stderr, dynamic_ncols=True)

    def step(self, record: dict[str, Any]) -> None:
        if self.bar is None:
            return
        extra = {"stale": record["staleness"]} if "staleness" in record else {}  # separate engines: steps behind
        self.bar.set_postfix(reward=f"{record.get('reward', 0):.3f}", H=f"{record.get('semantic_entropy', 0):.3f}",
                             tok_s=f"{record.get('tokens_per_second', 0):.0f}", **extra, refresh=False)
        self.bar.n = record["step"]
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(run: EmpoRun, *, steps: int | None = None, fresh: bool = False, progress: bool = True,
        num_cpus: int | None = None) -> RunSummary:
    """Train `run` to its end (or `steps`), resuming from its latest checkpoint unless `fresh`.

    A SIGTERM before the learners train raises preemption.Preempted; after that it (or the request
    file) stops the run after the step in progress with a checkpoint, and the summary says
    `preempted`."""
    preempt = preemption.DriverPreemption().install()
    try:
        return _run(run, steps, fresh, progress, num_cpus, preempt)
    finally:
        preempt.uninstall()


def _run(run: EmpoRun, steps: int | None, fresh: bool, progress: bool, num_cpus: int | None,
         preempt: preemption.DriverPreemption) -> RunSummary:
    _local_ray_env()
    import ray
    from ray.util.queue import Empty, Queue

    from .actors import LearnerActor, SamplerActor
    from .data import load_examples
    from .storage import open_run_root, run_root

    started = time.perf_counter()
    spec = run.spec
    root = run_root(spec.storage, run.namespace, run.name)  # storage.uri parsed once, here; the learners get it
    storage = open_run_root(root, spec.storage)
    # Before reading LATEST: from here on a learner of an older attempt cannot move it (fencing).
    attempt = storage.claim_attempt(host=socket.gethostname(), pid=os.getpid())
    storage.clean_leftovers()  # temp files and multipart uploads of writers killed mid-write
    latest = None if fresh else storage.checkpoints.latest()
    _trim_metrics(storage, latest.step if latest else 0)
    examples = load_examples(spec.dataset, spec.prompt)
    max_steps = steps or total_steps(spec, len(examples))
    plan = plan_placement(spec)
    with preempt.around_ray_init():  # ray.init replaces our SIGTERM handler with its own
        _init_ray(num_cpus)
    threads = num_cpus or os.cpu_count()
    events = Queue()
    # The model is fetched once, here (the one pod with HF_TOKEN), into the run's storage; the
    # actors load that verified copy (model_staging.py).
    # The actors get the validated spec itself (Ray pickles it): no JSON round trip, no second
    # validation in every actor.
    actor_spec, _ = model_staging.stage(spec, storage)
    local = not os.environ.get("RAY_ADDRESS")

    def placed(cls, bundles, index):
        # On KubeRay the plan's custom resources pin each actor to a pod of its group; a local Ray
        # has no such pods, so actors share the machine.
        if local:
            return ray.remote(num_cpus=0)(cls)
        bundle = bundles[index].to_ray()
        return ray.remote(num_cpus=bundle["CPU"], num_gpus=bundle.get("GPU", 0),
                          resources={k: v for k, v in bundle.items() if k not in ("CPU", "GPU")})(cls)

    control = Queue()  # the driver's stop request to the learners (a learner polls it at each step end)
    samplers = []
    if not plan.colocated:
        samplers = [placed(SamplerActor, plan.sampler_bundles, i).remote(actor_spec, threads if local else None)
                    for i in range(len(plan.sampler_bundles))]
        ray.get([s.ready.remote() for s in samplers])
    world = len(plan.learner_bundles)
    learners = [placed(LearnerActor, plan.learner_bundles, rank).remote(
        actor_spec, root, run.namespace, run.name, examples, str(_work_dir(run) / f"rank-{rank}"), events, samplers,
        max(1, threads // world) if local else None, rank, world) for rank in range(world)]
    if world > 1:  # data-parallel learners: torch.distributed rendezvous at rank 0's address
        address = ray.get(learners[0].rendezvous_address.remote())
        # one process per GPU: ranks on one node share its GPUs' visibility (NCCL peer-to-peer)
        layout = node_local_ranks(ray.get([lr.device_info.remote() for lr in learners]))
        ray.get([lr.join.remote(address, *layout[rank]) for rank, lr in enumerate(learners)])

    reporter = ProgressReporter.from_env()  # a no-op outside a cluster
    exporter = metrics_exporter.from_env(run.namespace, run.name)  # /metrics when EMPO_METRICS_PORT is set
    mlflow_run_id = tracking.mlflow_run(spec, run.namespace, run.name)  # before the learners attach to it
    bar = _ProgressBar(max_steps, latest.step if latest else 0, progress)
    summary = RunSummary(run.name, run.namespace, storage.uri, 0, max_steps, None, None, None, 0.0)
    runs = [lr.train.remote(max_steps, fresh, attempt, control) for lr in learners]
    done = runs[0]
    preempt.training()  # from here a SIGTERM asks the learners to stop after their step

    def drain() -> None:
        while True:
            try:
                event = events.get_nowait()
            except Empty:
                return
            kind = event["type"]
            if kind == "step":
                record = event["record"]  # already in metrics.jsonl (the learner writes it)
                summary.steps, summary.last_record = record["step"], record
                bar.step(record)
                reporter.report(_status_progress(record, max_steps))
                exporter.step({**record, "total_steps": max_steps})
            elif kind == "checkpoint":
                summary.latest_checkpoint = event["uri"]
                reporter.checkpoint(event["step"], event["uri"])
            elif kind == "eval":
                summary.first_eval = summary.first_eval or event["result"]
                reporter.eval(event["result"])
                exporter.eval(event["result"])
            elif kind == "resumed":
                summary.resumed_from_step = event["step"]
                bar.step({"step": event["step"]})

    finished = False
    abandoned = False
    try:
        while True:
            ready, _ = ray.wait(runs, num_returns=len(runs), timeout=0.5)
            drain()
            if len(ready) == len(runs):
                result = ray.get(done)
                break
            for ref in ready:  # a failed rank would leave the others waiting in a collective
                ray.get(ref)
            give_up = preempt.poll()  # True once the step and its commit overran the grace period
            if preempt.requested and not preempt.sent:
                control.put_nowait("stop")
                preempt.sent = True
                print(f"preemption requested ({preempt.reason}): stopping after step {_last_step(summary) + 1} "
                      f"with a checkpoint (giving up after {preempt.grace:.0f}s, {preemption.GRACE_ENV})",
                      file=sys.stderr, flush=True)
            if give_up:
                abandoned = True
                break
        drain()
        finished = True
    finally:
        bar.close()
        reporter.close()
        exporter.close()
        if not finished:  # a resumed attempt sets it running again
            tracking.mlflow_finish(spec, mlflow_run_id, [], status="FAILED")
    if abandoned or result.get("preempted"):
        return _preempted(summary, storage, preempt, abandoned, None if abandoned else result["step"],
                          lambda: tracking.mlflow_finish(spec, mlflow_run_id, [], status="KILLED"), started)
    summary.steps = result["step"]
    summary.final_eval = result.get("final_eval")
    summary.seconds = time.perf_counter() - started
    report = _write_report(storage)
    tracking.mlflow_finish(spec, mlflow_run_id, [report] if report else [])
    return summary


def _preempted(summary: RunSummary, storage, preempt: preemption.DriverPreemption, abandoned: bool,
               step: int | None, close_tracking, started: float) -> RunSummary:
    """The one log line of a preempted attempt, after checking what LATEST (verified) now names."""
    summary.preempted = True
    summary.seconds = time.perf_counter() - started
    try:
        latest = storage.checkpoints.latest()
    except Exception as exc:  # noqa: BLE001 - say what is known; the next attempt verifies again
        latest, why = None, one_line(exc)
    else:
        why = ""
    at = latest.step if latest else 0
    summary.latest_checkpoint = latest.uri if latest else summary.latest_checkpoint
    if abandoned:
        line = (f"preempted during step {_last_step(summary) + 1}: abandoned it after {preempt.elapsed():.0f}s "
                f"({preemption.GRACE_ENV}={preempt.grace:.0f}); the next attempt resumes from "
                + (f"checkpoint step-{at} ({latest.uri})" if latest else "step 0") + (f" ({why})" if why else ""))
    elif latest is not None and latest.step == step:
        summary.steps = step
        line = (f"preempted at step {step}: checkpoint step-{step} committed; the next attempt resumes from it "
                f"({latest.uri}, {latest.total_bytes / 1e6:.1f} MB, {preempt.elapsed():.1f}s after the request)")
    elif step == 0 and latest is None:
        summary.steps = 0
        line = "preempted before step 1: nothing to checkpoint; the next attempt starts from step 0"
    else:  # not expected: the learner stopped at `step` but LATEST names another one
        summary.steps = step or 0
        line = (f"preempted at step {step}: but LATEST names step {at if latest else 'none'}"
                + (f" ({why})" if why else "") + "; the next attempt resumes from LATEST")
    print(line, file=sys.stderr, flush=True)
    reporter = ProgressReporter.from_env()  # the run's reporter is closed: a last patch of its own
    reporter.preempted(at, line)
    reporter.close()
    try:
        close_tracking()
    except Exception as exc:  # noqa: BLE001 - tracking must not turn a clean stop into a failure
        print(f"warning: tracking not closed: {one_line(exc)}", file=sys.stderr)
    return summary


def _last_step(summary: RunSummary) -> int:
    """The last step completed: logged in this attempt, or the checkpoint it resumed from."""
    return max(summary.steps, summary.resumed_from_step or 0)


def _trim_metrics(storage, keep_through_step: int) -> None:
    """Drop metrics lines past the step we (re)start from: an attempt killed after its last
    checkpoint logged steps that the resumed attempt will run, and log, again."""
    storage.trim_metrics(keep_through_step)


def _status_progress(record: dict[str, Any], total: int) -> dict[str, Any]:
    """The EmpoRun status.progress fields (camelCase) from one metrics record."""
    keys = {"reward": "reward", "reward_std": "rewardStd", "semantic_entropy": "semanticEntropy",
            "filtered_fraction": "filteredFraction", "tokens_per_second": "tokensPerSecond"}
    out = {"step": record["step"], "totalSteps": total}
    out.update({camel: record[k] for k, camel in keys.items() if isinstance(record.get(k), (int, float))})
    return out


def _write_report(storage) -> Path | None:
    from .evaluation.report import write_report

    try:
        return write_report(storage)
    except Exception as exc:  # a report is a convenience; never fail a finished run over it
        print(f"warning: report not written: {exc}", file=sys.stderr)
        return None


def run_to_exit(empo_run: EmpoRun, label: str, **options: Any) -> int:
    """`empo_run` trained by run(empo_run, **options) and ended as a command ends, for `empo train`
    and the RayJob's entry point alike; every line it prints starts with `label`.

    Exit 0 with the summary on stdout when the run is done; preemption.EXIT_PREEMPTED when a stop
    request ended it after a checkpoint, or before the learners trained (then status.lastPreemption
    says so, as the driver's own report does after a checkpoint, so the operator starts the next
    attempt at once and does not count it against maxRestarts); 2 with one line on stderr, no
    traceback, for input the user can fix or storage that stayed down past its outage window (an
    actor's error arrives wrapped in Ray's, whose text is the actor's traceback)."""
    try:
        summary = run(empo_run, **options)
    except preemption.Preempted:
        line = "preempted before training started: nothing to checkpoint; the next attempt resumes from the latest checkpoint"
        print(f"{label}: {line}", file=sys.stderr)
        reporter = ProgressReporter.from_env()
        reporter.preempted(None, line)
        reporter.close()
        return preemption.EXIT_PREEMPTED
    except (SpecError, DatasetError, ModelSourceError, StorageError) as exc:
        print(f"{label}: {one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        shutdown()
    print("\n".join(summary.lines()))
    return preemption.EXIT_PREEMPTED if summary.preempted else 0


def user_error(exc: BaseException) -> BaseException:
    """The exception an actor raised, unwrapped from Ray's RayTaskError (whose text is the actor's
    traceback: some forty lines above the one that says what happened)."""
    for _ in range(5):  # an actor's error raised through another actor is wrapped twice
        cause = getattr(exc, "cause", None)
        if not any(c.__name__ == "RayTaskError" for c in type(exc).__mro__) \
                or not isinstance(cause, BaseException) or cause is exc:
            break
        exc = cause
    return exc


def one_line(exc: BaseException) -> str:
    """A user-facing error without Ray's traceback: the message of the exception the actor raised."""
    return str(user_error(exc)).strip() or type(exc).__name__


def shutdown() -> None:
    """Ray's shutdown, when this process started or joined it. A stop request that lands while the
    driver imports Ray (preemption.Preempted raised inside `import ray`) leaves the module half
    imported in sys.modules: importing it again here would fail with an AttributeError instead of
    the preemption's exit 75."""
    ray = sys.modules.get("ray")
    is_initialized = getattr(ray, "is_initialized", None)
    if is_initialized is not None and is_initialized():
        ray.shutdown()
