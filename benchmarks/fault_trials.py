"""Faults on the real node, each repeated at random moments of a run, with what each cost (issue 24).

    .venv/bin/python benchmarks/fault_trials.py                       # every fault, 5 times each
    .venv/bin/python benchmarks/fault_trials.py --quick               # every fault once
    .venv/bin/python benchmarks/fault_trials.py --faults drain,kill-head --repeats 3 --seed 7

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

Prints a table, writes every trial and the summary as JSON (`--out`) and the table as Markdown
(`--md`, for docs/results.md), both rewritten after every trial.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"
FAULTS = ("drain", "evict-head", "kill-head", "delete-learner", "kubelet-restart", "operator-delete", "s3-outage")
EXTRA_FAULTS = ("none",)
# The pods are told to stop (SIGTERM after the preStop hook): the step in progress is finished and
# committed, so nothing is trained twice.
SIGTERM_FAULTS = {"drain", "evict-head", "delete-learner"}
# The run's pods are not touched: no new attempt is expected at all.
UNTOUCHED_FAULTS = {"kubelet-restart", "operator-delete", "s3-outage", "none"}
OPERATOR_NAMESPACE = "empo-system"
OPERATOR_SELECTOR = "app.kubernetes.io/instance=empo"
_ATTEMPT = re.compile(r"(?:^|/)attempts/attempt-(\d{6,})\.json$")


# ---------------------------------------------------------------------------------------------
# measurement: pure functions of what was observed (tests/unit/benchmarks/test_fault_trials.py)
# ---------------------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """One poll of the run's folder: when, the newest attempt claimed (read before the metrics),
    metrics.jsonl's records and the step LATEST names (None: no checkpoint yet)."""

    t: float
    attempt: int
    records: list[dict]
    latest: int | None = None


def parse_metrics(body: str) -> tuple[list[dict], int]:
    """(records, torn lines) of a metrics.jsonl body, read as the trainer reads it on resume."""
    from empo_trainer.storage.layout import parse_metrics as trainer_parse

    records, torn = trainer_parse(body)
    return records, len(torn)


def newest_attempt(keys: list[str]) -> int:
    """The highest N of the attempts/attempt-N.json keys (0: none)."""
    return max((int(m.group(1)) for k in keys if (m := _ATTEMPT.search(k))), default=0)


def parse_latest_step(body: bytes | str | None) -> int | None:
    if not body:
        return None
    try:
        return int(json.loads(body)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _key(record: dict) -> str:
    return json.dumps(record, sort_keys=True)


def _max_step(records: list[dict]) -> int:
    return max((r["step"] for r in records), default=0)


def measure(snapshots: list[Snapshot], fault_at: float) -> dict[str, Any]:
    """What a fault at `fault_at` cost, from the polls before and after it.

    A metrics line is "fresh" in the first poll that shows it (its text: a step trained again logs
    other timings). Fresh lines in polls whose newest attempt is still the one at the fault are
    that attempt's (a SIGTERM's last step); fresh lines once a newer attempt was claimed are the
    next attempt's (the attempt number is read before metrics.jsonl, and an attempt logs its first
    step many seconds after its claim, so a poll every second cannot mistake one for the other).
    The next attempt's first fresh line is the step after the one it resumed from."""
    snapshots = sorted(snapshots, key=lambda s: s.t)
    before = [s for s in snapshots if s.t <= fault_at]
    after = [s for s in snapshots if s.t > fault_at]
    at_fault = before[-1] if before else Snapshot(fault_at, 0, [], None)
    old = at_fault.attempt
    seen = {_key(r) for s in before for r in s.records}
    hit = _max_step(at_fault.records)
    first_fresh_t = new_attempt_t = resumed_t = None
    resumed_from = None
    newest = old
    for s in after:
        fresh = [r for r in s.records if _key(r) not in seen]
        seen.update(_key(r) for r in s.records)
        newest = max(newest, s.attempt)
        if s.attempt <= old:
            if fresh:
                hit = max(hit, _max_step(fresh))
                first_fresh_t = first_fresh_t or s.t
            continue
        new_attempt_t = new_attempt_t or s.t
        if fresh and resumed_from is None:
            resumed_from = min(r["step"] for r in fresh) - 1
            resumed_t = s.t
    out: dict[str, Any] = {
        "attempt_at_fault": old,
        "step_logged_at_fault": _max_step(at_fault.records),
        "latest_at_fault": at_fault.latest or 0,
        "new_attempts": newest - old,
        "hit_step": hit,
        "resumed_from": resumed_from,
        "new_attempt_after_s": None if new_attempt_t is None else round(new_attempt_t - fault_at, 1),
    }
    if newest > old:
        out["steps_lost"] = None if resumed_from is None else max(0, hit - resumed_from)
        out["resume_s"] = None if resumed_t is None else round(resumed_t - fault_at, 1)
    else:
        out["steps_lost"] = 0
        out["resume_s"] = None if first_fresh_t is None else round(first_fresh_t - fault_at, 1)
    # Without a SIGTERM the most a fault may cost: the steps after the last committed checkpoint.
    out["steps_since_checkpoint"] = max(0, hit - (at_fault.latest or 0))
    return out


def final_lines(records: list[dict], torn: int, total_steps: int) -> dict[str, int]:
    """metrics.jsonl at the end against steps 1..total_steps, one line each."""
    steps = [r["step"] for r in records]
    return {"lines": len(steps) + torn, "lines_lost": len(set(range(1, total_steps + 1)) - set(steps)),
            "lines_duplicated": len(steps) - len(set(steps)), "lines_torn": torn,
            "lines_unexpected": len(set(steps) - set(range(1, total_steps + 1)))}


def compare_state_dicts(a: dict, b: dict) -> dict[str, Any]:
    """Two state dicts of tensors: equal with tolerance 0 (same names, shapes, dtypes and values)
    and the largest absolute difference over the tensors both have with the same shape."""
    import torch

    names = sorted(set(a) | set(b))
    missing = [n for n in names if n not in a or n not in b]
    mismatched, max_diff = [], 0.0
    for n in names:
        if n in missing:
            continue
        x, y = a[n], b[n]
        if x.shape != y.shape or x.dtype != y.dtype:
            mismatched.append(n)
            continue
        if not torch.allclose(x, y, rtol=0, atol=0, equal_nan=True):
            mismatched.append(n)
        if x.numel():
            max_diff = max(max_diff, (x.double() - y.double()).abs().max().item())
    return {"equal": not missing and not mismatched, "max_abs_diff": max_diff, "tensors": len(names),
            "tensors_differing": len(mismatched), "tensors_missing": len(missing)}


def verdict(fault: str, trial: dict) -> bool:
    """The trial met the goals: Succeeded, every metrics line once, and steps lost 0 (a SIGTERM,
    or the run untouched) or at most the steps since the last checkpoint (kill -9)."""
    lost = trial.get("steps_lost")
    if trial.get("phase") != "Succeeded" or lost is None:
        return False
    if trial.get("lines_lost") or trial.get("lines_duplicated") or trial.get("lines_torn"):
        return False
    if fault in SIGTERM_FAULTS or fault in UNTOUCHED_FAULTS:
        return lost == 0
    return lost <= trial.get("steps_since_checkpoint", 0)


def summarize(trials: list[dict]) -> list[dict]:
    """One row per fault, in the order the faults first ran."""
    order = list(dict.fromkeys(t["fault"] for t in trials))
    rows = []
    for fault in order:
        ts = [t for t in trials if t["fault"] == fault]
        done = [t for t in ts if not t.get("missed")]
        lost = [t["steps_lost"] for t in done if t.get("steps_lost") is not None]
        resume = [t["resume_s"] for t in done if t.get("resume_s") is not None]
        models = [t["model"] for t in done if isinstance(t.get("model"), dict)]
        rows.append({
            "fault": fault, "trials": len(ts), "missed": len(ts) - len(done),
            "succeeded": sum(t.get("phase") == "Succeeded" for t in done),
            "met_goal": sum(bool(t.get("met_goal")) for t in done),
            "steps_lost": lost, "steps_lost_max": max(lost, default=None),
            "steps_since_checkpoint": [t.get("steps_since_checkpoint") for t in done],
            "resume_s_median": round(statistics.median(resume), 1) if resume else None,
            "resume_s_max": max(resume, default=None),
            "lines_lost": sum(t.get("lines_lost") or 0 for t in done),
            "lines_duplicated": sum(t.get("lines_duplicated") or 0 for t in done),
            "new_attempts": sum(t.get("new_attempts") or 0 for t in done),
            "restarts": sum(t.get("restarts") or 0 for t in done),
            "preemptions": sum(t.get("preemptions") or 0 for t in done),
            "model_equal": sum(bool(m.get("equal")) for m in models), "models_compared": len(models),
            "model_max_abs_diff": max((m["max_abs_diff"] for m in models), default=None),
        })
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return " ".join(_cell(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:.3g}" if value and abs(value) < 1e-2 else f"{value:.1f}"
    return str(value)


COLUMNS = [("fault", "fault"), ("trials", "trials"), ("succeeded", "Succeeded"), ("met_goal", "met goal"),
           ("steps_lost", "steps lost (each trial)"), ("steps_since_checkpoint", "since checkpoint"),
           ("resume_s_median", "resume s (median)"), ("resume_s_max", "resume s (max)"),
           ("lines_lost", "lines lost"), ("lines_duplicated", "lines dup."), ("new_attempts", "new attempts"),
           ("restarts", "restarts"), ("preemptions", "preemptions"), ("model_equal", "model equal"),
           ("model_max_abs_diff", "max abs diff")]


def markdown_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = []
    for row in rows:
        cells = []
        for key, _ in COLUMNS:
            if key == "model_equal":
                cells.append(f"{row['model_equal']}/{row['models_compared']}")
            elif key == "succeeded" or key == "met_goal":
                cells.append(f"{row[key]}/{row['trials'] - row['missed']}")
            else:
                cells.append(_cell(row[key]))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *body]) + "\n"


def text_table(rows: list[dict]) -> str:
    lines = [[title for _, title in COLUMNS]]
    for row in rows:
        lines.append([f"{row['model_equal']}/{row['models_compared']}" if key == "model_equal" else _cell(row[key])
                      for key, _ in COLUMNS])
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines) + "\n"


def pick_moment(rnd: random.Random, steps: int) -> tuple[int, float]:
    """(the step whose metrics line starts the wait, the fraction of a step's time waited after it):
    a step from 1 to steps-4, so a fault comes mid-run with steps left to resume into."""
    return rnd.randint(1, max(1, steps - 4)), rnd.random()


def trial_random(seed: int, fault: str, index: int) -> random.Random:
    """The random source of one trial: the same moments for a fault's i-th trial whichever other
    faults run (a str seed is hashed with SHA-512, not Python's per-process hash)."""
    return random.Random(f"{seed}:{fault}:{index}")


def parse_faults(text: str) -> list[str]:
    names = [f.strip() for f in text.split(",") if f.strip()]
    if names == ["all"]:
        return list(FAULTS)
    unknown = [f for f in names if f not in FAULTS + EXTRA_FAULTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown faults {unknown}; choose from {', '.join(FAULTS + EXTRA_FAULTS)}")
    return names


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
# the faults
# ---------------------------------------------------------------------------------------------

@dataclass
class Context:
    nc: Any
    s3: Any
    args: argparse.Namespace
    tmp: Path


def _pod(ctx: Context, ns: str, component: str) -> dict:
    pods = [p for p in ctx.nc.pods(ns, f"empo.dev/component={component}")
            if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running"]
    if not pods:
        raise RuntimeError(f"no running {component} pod in {ns}")
    return pods[0]


def fault_drain(ctx: Context, ns: str) -> dict:
    from tests.e2e.flow import RUN_NAME
    from tests.plugins.node import NODE_NAME

    cp = ctx.nc.cp
    cmd = ["drain", NODE_NAME, f"--pod-selector=empo.dev/run={RUN_NAME}", "--ignore-daemonsets",
           "--delete-emptydir-data", "--timeout=300s"]
    started = time.time()
    try:
        cp.kubectl(*cmd, timeout=330)
        drained = time.time() - started
    finally:
        cp.kubectl("uncordon", NODE_NAME)
    return {"commands": [f"kubectl {' '.join(cmd)}", f"kubectl uncordon {NODE_NAME}"], "drain_s": round(drained, 1)}


def fault_evict_head(ctx: Context, ns: str) -> dict:
    name = _pod(ctx, ns, "head")["metadata"]["name"]
    body = ctx.tmp / "eviction.json"
    body.write_text(json.dumps({"apiVersion": "policy/v1", "kind": "Eviction",
                                "metadata": {"name": name, "namespace": ns}}))
    path = f"/api/v1/namespaces/{ns}/pods/{name}/eviction"
    ctx.nc.cp.kubectl("create", "--raw", path, "-f", str(body))
    return {"commands": [f"kubectl create --raw {path} -f eviction.json (policy/v1 Eviction)"], "pod": name}


def fault_kill_head(ctx: Context, ns: str) -> dict:
    pod = _pod(ctx, ns, "head")
    status = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "ray-head")
    container = status["containerID"].split("://", 1)[1]
    ctrd = ctx.nc.containerd
    pid = ctrd.ctr("tasks", "ls").stdout  # for the record: the task's PID as containerd knows it
    task_pid = next((line.split()[1] for line in pid.splitlines() if line.startswith(container)), None)
    ctrd.ctr("tasks", "kill", "-s", "SIGKILL", container)
    return {"commands": [f"ctr -a {ctrd.socket} -n {ctrd.namespace} tasks kill -s SIGKILL {container}"],
            "pod": pod["metadata"]["name"], "container": container, "task_pid": task_pid,
            "restart_count_before": status.get("restartCount", 0)}


def fault_delete_learner(ctx: Context, ns: str) -> dict:
    name = _pod(ctx, ns, "learner")["metadata"]["name"]
    ctx.nc.cp.kubectl("delete", "pod", name, "-n", ns, "--wait=false")
    return {"commands": [f"kubectl delete pod {name} -n {ns} --wait=false"], "pod": name}


def _kubelet_healthz(nc) -> str:
    import yaml

    config = yaml.safe_load((nc.workdir / "node" / "kubelet.yaml").read_text())
    return f"http://127.0.0.1:{config['healthzPort']}/healthz"


def fault_kubelet_restart(ctx: Context, ns: str) -> dict:
    from tests.plugins.control_plane import _http_ok

    nc = ctx.nc
    started = time.time()
    nc.restart_component("kubelet", down_s=ctx.args.kubelet_down_s)
    restarted = time.time()
    url, deadline = _kubelet_healthz(nc), time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if _http_ok(url):
                break
        except OSError:
            pass
        time.sleep(0.2)
    healthy = time.time()
    while not nc.node_ready() and time.monotonic() < deadline:
        time.sleep(0.5)
    return {"commands": ["kill -TERM <kubelet pid>", f"sleep {ctx.args.kubelet_down_s}",
                         "kubelet <the same arguments> (NodeCluster.restart_component)"],
            "stopped_s": round(restarted - started, 1), "healthz_after_start_s": round(healthy - restarted, 1),
            "node_ready": nc.node_ready()}


def fault_operator_delete(ctx: Context, ns: str) -> dict:
    cp = ctx.nc.cp
    before = {p["metadata"]["name"] for p in ctx.nc.pods(OPERATOR_NAMESPACE, OPERATOR_SELECTOR)}
    started = time.time()
    cp.kubectl("delete", "pod", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR, "--wait=false")
    ready_s, deadline = None, time.monotonic() + 300
    while time.monotonic() < deadline:
        for pod in ctx.nc.pods(OPERATOR_NAMESPACE, OPERATOR_SELECTOR):
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if pod["metadata"]["name"] not in before and conditions.get("Ready") == "True":
                ready_s = round(time.time() - started, 1)
        if ready_s is not None:
            break
        time.sleep(0.5)
    return {"commands": [f"kubectl delete pod -n {OPERATOR_NAMESPACE} -l {OPERATOR_SELECTOR} --wait=false"],
            "deleted": sorted(before), "new_pod_ready_s": ready_s}


def fault_s3_outage(ctx: Context, ns: str) -> dict:
    started = time.time()
    ctx.s3.stop_server()
    stopped = time.time()
    time.sleep(max(0.0, ctx.args.outage_s - (stopped - started)))
    down = time.time()
    ctx.s3.start_server()
    return {"commands": ["kill -TERM <weed mini pid>", f"sleep {ctx.args.outage_s}",
                         "weed mini <the same arguments: ports, data folder> (S3Server.start_server)"],
            "stop_s": round(stopped - started, 1), "down_s": round(down - started, 1),
            "start_s": round(time.time() - down, 1)}


def fault_none(ctx: Context, ns: str) -> dict:
    return {"commands": []}


FAULT_ACTIONS: dict[str, Callable[[Context, str], dict]] = {
    "drain": fault_drain, "evict-head": fault_evict_head, "kill-head": fault_kill_head,
    "delete-learner": fault_delete_learner, "kubelet-restart": fault_kubelet_restart,
    "operator-delete": fault_operator_delete, "s3-outage": fault_s3_outage, "none": fault_none,
}


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
        out.update(measure(snapshots, fault_at))
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
    result["summary"] = summarize(result["trials"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    config = result["config"]
    args.md.write_text(
        f"Fault trials on the test node ({config['repeats']} per fault, seed {config['seed']}; tiny model, "
        f"{config['steps']} steps, checkpointEvery {config['checkpoint_every']}, maxRestarts "
        f"{config['max_restarts']}; benchmarks/fault_trials.py):\n\n" + markdown_table(result["summary"]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fault_trials.py", description=__doc__.split("\n")[0],
                                     epilog=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=parse_faults, default=list(FAULTS),
                        help=f"comma-separated, from {', '.join(FAULTS + EXTRA_FAULTS)} (default: all but none)")
    parser.add_argument("--repeats", type=int, default=5, help="trials per fault (default 5)")
    parser.add_argument("--quick", action="store_true", help="one trial per fault (--repeats 1)")
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
    if os.geteuid() != 0:
        print("the test node needs root (network, mounts, cgroups)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # a kill tears the node down like Ctrl-C

    from tests.e2e.flow import install_operator
    from tests.plugins.node import NODE_IP, NODE_NAME, build_images, start_node_cluster
    from tests.plugins.seaweedfs import start_seaweedfs

    result: dict[str, Any] = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                              "trials": []}
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
                for fault in args.faults:
                    for i in range(args.repeats):
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
