"""Faults on the real node, each repeated at random moments of a run, with what each cost (issue 24).

    .venv/bin/python benchmarks/fault_trials.py                       # every fault, 5 times each
    .venv/bin/python benchmarks/fault_trials.py --quick               # every fault once
    .venv/bin/python benchmarks/fault_trials.py --faults drain,kill-head --repeats 3 --seed 7
    .venv/bin/python benchmarks/fault_trials.py --first-trial 1 --repeats 4 --include earlier.json

Starts the node cluster of the end-to-end tests (tests/plugins/node.py), a SeaweedFS the pods reach
and the chart's operator, as benchmarks/bench_pods.py does (root, a free node: nothing else may run
pods on it). Every trial applies the tests' tiny-model EmpoRun (tests/e2e/flow.py RUN: `--steps`
12, checkpointEvery 4, maxRestarts 3) in a namespace and bucket of its own, one trial after the
other (the node has 2 CPUs). A seeded random moment is picked per trial (a step between 1 and
steps-4, then a random fraction of a step's time after that step's metrics line) and the fault is
done then:

  drain            kubectl drain empo-node --pod-selector=empo.dev/run=tiny-pods --ignore-daemonsets
                   --delete-emptydir-data --timeout=300s (head, learner and submitter evicted), then
                   kubectl uncordon empo-node
  evict-head       POST pods/<head>/eviction (policy/v1 Eviction, kubectl create --raw): the head alone
  kill-head        ctr -a <node containerd socket> -n k8s.io tasks kill -s SIGKILL <ray-head container>:
                   the container's PID 1 gets SIGKILL, the kernel ends the rest of its PID namespace;
                   no SIGTERM, no preStop hook
  delete-learner   kubectl delete pod <learner> --wait=false (graceful: preStop hook, SIGTERM)
  kubelet-restart  the kubelet the node plugin started, stopped by PID (SIGTERM) and started again
                   with the same arguments (NodeCluster.restart_component); waits for its /healthz
  operator-delete  kubectl delete pod -n empo-system -l app.kubernetes.io/instance=empo --wait=false;
                   the Deployment makes a new one (its Ready time is recorded)
  s3-outage        SeaweedFS stopped by PID (SIGTERM) for `--outage-s` (30) seconds, then started again
                   on the same ports and data folder (S3Server.stop_server / start_server)
  none             no fault (a control: is an uninterrupted run equal to the reference?); not in the
                   default set

Measured per trial, from S3 (metrics.jsonl, checkpoints/LATEST, attempts/, polled every second by a
thread) and the EmpoRun status (phase, restarts, preemptions, lastPreemption):

  steps lost       steps trained twice: the last step the interrupted attempt logged minus the step
                   the next attempt resumed from (its first metrics line minus 1); 0 when no new
                   attempt started. Goal: 0 where the pods get a SIGTERM (drain, evict-head,
                   delete-learner) or the run is not touched (kubelet, operator, S3 outage waited
                   out); at most the steps since the last periodic checkpoint for kill-head.
  resume s         the fault's start to the first metrics line of the next attempt (or, with no new
                   attempt, to the first new metrics line after the fault).
  lines lost/dup   in the final metrics.jsonl: steps 1..N missing, and lines beyond one per step.
  model            the final checkpoint's model.safetensors against an uninterrupted reference run
                   of the same configuration (same seed, tiny model on CPU): equal with tolerance 0,
                   and the largest absolute difference.

Trials run round by round (trial 0 of every fault, then trial 1, ...), so a stopped run leaves the
faults evenly covered. A trial's moment depends only on (seed, fault, trial index): `--first-trial 1
--repeats 4 --include earlier.json` adds trials 1-4 to a series whose trial 0 is in earlier.json
(same seed and run configuration, checked), and the summary counts all five; where two included
outputs hold the same trial, the later one's is kept. `--summarize-only
--include a.json --include b.json` runs nothing: it judges the trials of those outputs by today's
rules and writes the summary. A next attempt that logs no step because the interrupted one already
logged the last (a head killed near the end: the learners finish the run) lost nothing
(`done_before_next_attempt`).

Prints a table, writes every trial and the summary as JSON (`--out`) and the table as Markdown
(`--md`, for docs/results.md), both rewritten after every trial.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: for benchmarks.fault_measure and tests.plugins

# The faults themselves are benchmarks/fault_actions.py, the pure measurement (what was observed into
# figures, the tables) benchmarks/fault_measure.py, a series' plan and merges benchmarks/fault_series.py;
# here: the observer, the trial driver, the CLI.
from benchmarks.fault_actions import FAULT_ACTIONS, Context  # noqa: E402
from benchmarks.fault_measure import (EXTRA_FAULTS, FAULTS, Snapshot, _max_step, compare_state_dicts,  # noqa: E402
                                      final_lines, markdown_table, measure, newest_attempt, parse_latest_step,
                                      parse_metrics, pick_moment, settle_run_done, summarize, text_table, trial_random,
                                      verdict)
from benchmarks.fault_series import included_trials, judge, merge_trials, plan_trials  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


# ---------------------------------------------------------------------------------------------
# observing the run's folder while it runs
# ---------------------------------------------------------------------------------------------

class Observer(threading.Thread):
    """Polls the run's folder in S3 every `interval` seconds (attempts/, then metrics.jsonl and
    checkpoints/LATEST) into snapshots; polls that fail (the store stopped) are counted."""

    def __init__(self, s3, bucket: str, root: str, interval: float = 1.0):
        super().__init__(daemon=True)
        self.s3, self.bucket, self.root, self.interval = s3, bucket, root, interval
        self.snapshots: list[Snapshot] = []
        self.failed_polls = 0
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._client = None

    def _get(self, key: str) -> bytes | None:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self.root + key)["Body"].read()
        except self._client.exceptions.NoSuchKey:
            return None

    def snapshot(self) -> Snapshot:
        if self._client is None:
            from botocore.config import Config

            self._client = self.s3.client(config=Config(s3={"addressing_style": "path"}, connect_timeout=2,
                                                        read_timeout=5, retries={"max_attempts": 1}))
        t = time.time()
        listed = self._client.list_objects_v2(Bucket=self.bucket, Prefix=self.root + "attempts/")
        attempt = newest_attempt([o["Key"] for o in listed.get("Contents", [])])
        records, _ = parse_metrics((self._get("metrics.jsonl") or b"").decode("utf-8", "replace"))
        snap = Snapshot(t, attempt, records, parse_latest_step(self._get("checkpoints/LATEST")))
        with self._lock:
            self.snapshots.append(snap)
        return snap

    def poll(self) -> Snapshot | None:
        try:
            return self.snapshot()
        except Exception:  # noqa: BLE001 - the store down, a timeout: the next poll tries again
            self.failed_polls += 1
            return None

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.poll()

    def stop(self) -> list[Snapshot]:
        self._stop_event.set()
        self.join(timeout=30)
        with self._lock:
            return list(self.snapshots)

    def max_step(self) -> int:
        with self._lock:
            return _max_step(self.snapshots[-1].records) if self.snapshots else 0

    def last_record(self) -> dict:
        with self._lock:
            records = self.snapshots[-1].records if self.snapshots else []
        return max(records, key=lambda r: r["step"], default={})


# ---------------------------------------------------------------------------------------------
# one trial
# ---------------------------------------------------------------------------------------------

def _download(ctx: Context, bucket: str, key: str, dest: Path) -> Path | None:
    client = ctx.s3.client()
    try:
        client.download_file(bucket, key, str(dest))
    except Exception:  # noqa: BLE001 - no final checkpoint: the run did not finish
        return None
    return dest


def compare_files(a: Path, b: Path) -> dict:
    from safetensors.torch import load_file

    return compare_state_dicts(load_file(str(a)), load_file(str(b)))


def _cleanup(ctx: Context, ns: str) -> None:
    cp = ctx.nc.cp
    cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and cp.get("namespace", ns):
        time.sleep(2)  # the next trial needs the CPUs this one's pods held


def trial(ctx: Context, fault: str, index: int, reference: Path | None) -> dict:
    from tests.e2e.flow import RUN_NAME, Watch, apply_run

    nc, s3, args = ctx.nc, ctx.s3, ctx.args
    ns = nc.cp.create_namespace("fault")
    bucket = s3.new_bucket("faults")
    root = f"runs/{ns}/{RUN_NAME}/"
    target_step, fraction = pick_moment(trial_random(args.seed, fault, index), args.steps)
    out: dict[str, Any] = {"fault": fault, "index": index, "namespace": ns, "bucket": bucket,
                           "target_step": target_step, "fraction": round(fraction, 3)}
    applied = time.time()
    apply_run(nc, s3, ns, bucket, steps=args.steps, max_restarts=args.max_restarts,
              checkpoint_every=args.checkpoint_every)
    watch = Watch(nc, ns)
    observer = Observer(s3, bucket, root, args.poll_s)
    observer.start()
    try:
        deadline = time.monotonic() + args.start_timeout_s
        while observer.max_step() < target_step:
            status = watch.poll()
            if status.get("phase") in ("Succeeded", "Failed") or time.monotonic() > deadline:
                out["missed"] = f"step {target_step} not reached (phase {status.get('phase')})"
                break
            time.sleep(0.5)
        fault_at = None
        if "missed" not in out:
            step_s = float(observer.last_record().get("step_seconds") or 5.0)
            time.sleep(fraction * step_s)
            observer.poll()  # the state just before the fault
            fault_at = time.time()
            out["fault_at_s"] = round(fault_at - applied, 1)
            out.update(FAULT_ACTIONS[fault](ctx, ns))
            out["fault_s"] = round(time.time() - fault_at, 1)
        final = watch.until(lambda s: s.get("phase") in ("Succeeded", "Failed"), args.run_timeout_s, "the run to end")
        time.sleep(2 * args.poll_s)
    except AssertionError as exc:  # Watch.until's timeout
        out["error"] = str(exc)[:4000]
        final = watch.poll()
    except Exception as exc:  # noqa: BLE001 - a trial that broke is recorded; the next one runs
        out["error"] = f"{type(exc).__name__}: {exc}"[:4000]
        final = watch.poll()
    finally:
        snapshots = observer.stop()
    out["failed_polls"] = observer.failed_polls
    out["phase"] = final.get("phase")
    out["restarts"] = final.get("restarts")
    out["preemptions"] = final.get("preemptions")
    out["last_preemption"] = final.get("lastPreemption")
    out["run_s"] = round(time.time() - applied, 1)
    if out.get("fault_at_s") is not None:
        out.update(settle_run_done(measure(snapshots, fault_at), args.steps))
    client = s3.client()
    try:
        body = client.get_object(Bucket=bucket, Key=root + "metrics.jsonl")["Body"].read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001
        body = ""
    out.update(final_lines(*parse_metrics(body), args.steps))
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root)
            for o in page.get("Contents", [])]
    out["storage_attempts"] = newest_attempt(keys)
    model_key = f"{root}checkpoints/step-{args.steps:06d}/model.safetensors"
    model = _download(ctx, bucket, model_key, ctx.tmp / f"{ns}.safetensors")
    if model is not None and reference is not None:
        out["model"] = compare_files(model, reference)
    elif model is None:
        out["model"] = "no final checkpoint"
    out["met_goal"] = verdict(fault, out) if "missed" not in out else None
    if args.keep_namespaces:
        return out
    if model is not None:
        model.unlink()
    _cleanup(ctx, ns)
    return out


def reference_run(ctx: Context) -> tuple[dict, Path | None]:
    """One uninterrupted run of the trials' configuration: its final model.safetensors."""
    from tests.e2e.flow import RUN_NAME, Watch, apply_run

    nc, s3, args = ctx.nc, ctx.s3, ctx.args
    ns = nc.cp.create_namespace("fault-ref")
    bucket = s3.new_bucket("faults")
    started = time.time()
    apply_run(nc, s3, ns, bucket, steps=args.steps, max_restarts=args.max_restarts,
              checkpoint_every=args.checkpoint_every)
    watch = Watch(nc, ns)
    try:
        final = watch.until(lambda s: s.get("phase") in ("Succeeded", "Failed"), args.run_timeout_s,
                            "the reference run to end")
    except AssertionError as exc:  # the trials still run; their models are not compared
        final = {"phase": watch.poll().get("phase"), "error": str(exc)[:4000]}
    root = f"runs/{ns}/{RUN_NAME}/"
    path = _download(ctx, bucket, f"{root}checkpoints/step-{args.steps:06d}/model.safetensors",
                     ctx.tmp / "reference.safetensors")
    try:
        body = s3.client().get_object(Bucket=bucket, Key=root + "metrics.jsonl")["Body"].read().decode()
    except Exception:  # noqa: BLE001 - no metrics: the run never trained
        body = ""
    if final.get("phase") != "Succeeded":
        path = None  # a reference only when it ran to its end
    info = {"namespace": ns, "bucket": bucket, "phase": final.get("phase"), "run_s": round(time.time() - started, 1),
            **final_lines(*parse_metrics(body), args.steps), "model": str(path) if path else None,
            **({"error": final["error"]} if final.get("error") else {})}
    _cleanup(ctx, ns)
    return info, path


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

def _write(args, result: dict) -> None:
    judge(result["trials"], args.steps)
    result["summary"] = summarize(result["trials"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    config = result["config"]
    args.md.write_text(
        f"Fault trials on the test node (seed {config['seed']}"
        + (f", with the trials of {', '.join(config['include'])}" if config.get("include") else "") + "; tiny model, "
        f"{config['steps']} steps, checkpointEvery {config['checkpoint_every']}, maxRestarts "
        f"{config['max_restarts']}; benchmarks/fault_trials.py):\n\n" + markdown_table(result["summary"]))


def parse_faults(text: str) -> list[str]:
    names = [f.strip() for f in text.split(",") if f.strip()]
    if names == ["all"]:
        return list(FAULTS)
    unknown = [f for f in names if f not in FAULTS + EXTRA_FAULTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown faults {unknown}; choose from {', '.join(FAULTS + EXTRA_FAULTS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fault_trials.py", description=__doc__.split("\n")[0],
                                     epilog=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=parse_faults, default=list(FAULTS),
                        help=f"comma-separated, from {', '.join(FAULTS + EXTRA_FAULTS)} (default: all but none)")
    parser.add_argument("--repeats", type=int, default=5, help="trials per fault (default 5)")
    parser.add_argument("--quick", action="store_true", help="one trial per fault (--repeats 1)")
    parser.add_argument("--first-trial", type=int, default=0,
                        help="index of the first trial of each fault (its moment is seeded by seed, fault, index)")
    parser.add_argument("--include", type=Path, action="append", default=[],
                        help="an earlier output JSON of the same series whose trials join the summary")
    parser.add_argument("--summarize-only", action="store_true",
                        help="no node, no trials: judge and summarize the --include outputs into --out and --md")
    parser.add_argument("--seed", type=int, default=24, help="seed of the moments the faults come (default 24)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--checkpoint-every", type=int, default=4)
    parser.add_argument("--max-restarts", type=int, default=3)
    parser.add_argument("--outage-s", type=float, default=30.0, help="how long SeaweedFS is down (s3-outage)")
    parser.add_argument("--kubelet-down-s", type=float, default=0.0, help="seconds between kubelet stop and start")
    parser.add_argument("--poll-s", type=float, default=1.0, help="how often the run's folder is read")
    parser.add_argument("--start-timeout-s", type=float, default=900.0)
    parser.add_argument("--run-timeout-s", type=float, default=1800.0)
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                        help="one uninterrupted run first, whose final model the trials' are compared with")
    parser.add_argument("--keep-namespaces", action="store_true", help="leave each trial's namespace (debugging)")
    parser.add_argument("--out", type=Path, default=RESULTS / "fault_trials.json")
    parser.add_argument("--md", type=Path, default=RESULTS / "fault_trials.md")
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.repeats = 1
    if args.summarize_only:
        args.repeats = 0
    if os.geteuid() != 0 and not args.summarize_only:
        print("the test node needs root (network, mounts, cgroups)", file=sys.stderr)
        return 2
    config = {k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if k == "include" else v)
              for k, v in vars(args).items()}
    plan = plan_trials(args.faults, args.first_trial, args.repeats)
    try:
        earlier = merge_trials([included_trials(config, json.loads(path.read_text()), str(path), plan)
                                for path in args.include])
    except (OSError, ValueError) as e:
        print(f"--include: {e}", file=sys.stderr)
        return 2
    result: dict[str, Any] = {"config": config, "trials": earlier}
    if args.summarize_only:
        _write(args, result)
        print(text_table(result["summary"]))
        print(f"written: {args.out} and {args.md}")
        return 0
    signal.signal(signal.SIGTERM, _interrupt)  # a kill tears the node down like Ctrl-C

    from tests.e2e.flow import install_operator
    from tests.plugins.node import NODE_IP, NODE_NAME, build_images, start_node_cluster
    from tests.plugins.seaweedfs import start_seaweedfs

    images = build_images()
    with tempfile.TemporaryDirectory(prefix="empo-faults-") as tmp:
        with start_node_cluster(Path(tmp), images=images) as nc, \
                start_seaweedfs(Path(tmp) / "weed", ip=NODE_IP) as s3:
            ctx = Context(nc, s3, args, Path(tmp))
            install_operator(nc, s3)
            reference = None
            if args.reference:
                result["reference"], reference = reference_run(ctx)
                print(f"reference: {json.dumps(result['reference'])}", flush=True)
            try:
                for fault, i in plan:
                    out = trial(ctx, fault, i, reference)
                    result["trials"].append(out)
                    print(json.dumps(out, default=str), flush=True)
                    _write(args, result)
            finally:
                nc.cp.kubectl("uncordon", NODE_NAME, check=False)
    _write(args, result)
    print(text_table(result["summary"]))
    print(f"written: {args.out} and {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
