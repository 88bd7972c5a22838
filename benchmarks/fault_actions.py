"""The faults of benchmarks/fault_trials.py: what each does to the node, the store or the operator.

One function a fault, (Context, the trial's namespace) -> what was done (the commands, timings),
and FAULT_ACTIONS naming them; benchmarks/fault_trials.py's docstring says what each fault is. They
act on the live node cluster and SeaweedFS of the trials (tests/plugins/node.py,
tests/plugins/seaweedfs.py).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

OPERATOR_NAMESPACE = "empo-system"
OPERATOR_SELECTOR = "app.kubernetes.io/instance=empo"


@dataclass
class Context:
    """What a fault acts on: the node cluster, SeaweedFS, the CLI's arguments and a scratch folder."""

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
