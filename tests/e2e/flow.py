"""The user's path on the test node, shared by the end-to-end test and benchmarks/bench_pods.py:
install the chart from the built operator image, apply a small EmpoRun that stores in S3, and watch
it (EmpoRun status and pods) until it ends."""

from __future__ import annotations

import copy
import datetime
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "empo-operator"
STEPS = 3
RUN_NAME = "tiny-pods"
# The bundled tiny model and the committed arithmetic set, as examples/tiny.yaml, sized for the
# node's 2 CPUs: the head (700m), one learner pod (1 CPU: its actor reserves one), the submitter
# (100m) and the operator (50m) fit in 2000m.
RUN: dict[str, Any] = {
    "apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun", "metadata": {"name": RUN_NAME},
    "spec": {
        "model": {"source": "bundled:tiny-random", "dtype": "float32"},
        "dataset": {"uri": "data/local/arith-train.jsonl", "questionField": "question", "answerField": "answer",
                    "limit": 16},
        "algorithm": {"numGenerations": 4, "maxPromptLength": 128, "maxCompletionLength": 16,
                      "learningRate": 1.0e-4, "steps": STEPS, "promptsPerStep": 2},
        "sampler": {"backend": "transformers", "replicas": 0, "gpusPerReplica": 0},
        "learner": {"gpusPerReplica": 0, "precision": "fp32", "gradientCheckpointing": False},
        "ray": {"head": {"cpu": "700m", "memory": "3Gi"}, "worker": {"cpu": "1", "memory": "6Gi"}},
        "eval": {"benchmarks": ["arith-heldout"], "limit": 4, "maxNewTokens": 16},
        "maxRestarts": 0,
    },
}


# KubeRay's namespace as the chart is told (KubeRay itself runs on the host here, so the namespace
# holds only the probes that stand in for its pods).
KUBERAY_NAMESPACE = "kuberay-system"
KUBERAY_LABELS = {"app.kubernetes.io/name": "kuberay-operator"}


def install_operator(nc, s3, namespace: str = "empo-system") -> str:
    """`helm install` the chart with the operator image built here; returns once its pod is Ready.

    The chart is told where the API server listens (the bridge address, its own port) and that
    KubeRay reaches the dashboards through it (--use-kubernetes-proxy), so the runs' NetworkPolicies
    fit this cluster (tests/e2e/policy_check.py judges the pods' connections against them)."""
    repository, tag = nc.images["operator"].rsplit(":", 1)
    api_port = nc.cp.server.rsplit(":", 1)[1]
    nc.cp.kubectl("create", "namespace", KUBERAY_NAMESPACE)
    nc.cp.helm("install", "empo", CHART, "-n", namespace, "--create-namespace",
               "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
               "--set", "image.pullPolicy=Never",
               "--set", f"trainer.image={nc.images['trainer-cpu']}",
               "--set", f"storage.s3Endpoint={s3.endpoint}",
               "--set", "resources.requests.cpu=50m",
               "--set", f"kuberay.namespace={KUBERAY_NAMESPACE}",
               "--set", f"networkPolicy.dashboardCIDRs={{{nc.node_ip}/32}}",
               "--set", f"networkPolicy.apiServer.ports={{{api_port}}}",
               "--set", f"networkPolicy.apiServer.cidrs={{{nc.node_ip}/32}}",
               "--wait", "--timeout=5m", timeout=360)
    return namespace


CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=8).close()
    print("connected")
except OSError as exc:
    print("refused", type(exc).__name__)
"""


def can_connect(nc, probes: list[tuple[str, str, dict[str, str], str, int]]) -> dict[str, tuple[bool, str]]:
    """(whether it opened a TCP connection, its pod IP) of each probe pod (name, namespace, labels,
    ip, port), run all at once."""
    cp = nc.cp
    for name, namespace, labels, ip, port in probes:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
               "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False, "containers": [{
                   "name": "probe", "image": nc.images["operator"], "imagePullPolicy": "Never",
                   "command": ["python", "-c", CONNECT, ip, str(port)]}]}}
        cp.kubectl("apply", "-f", "-", input=json.dumps(pod))
    results = {}
    deadline = time.monotonic() + 180
    for name, namespace, *_ in probes:
        while (phase := ((cp.get("pod", name, namespace) or {}).get("status") or {}).get("phase")) not in (
                "Succeeded", "Failed"):
            assert time.monotonic() < deadline, f"probe {namespace}/{name} still {phase}"
            time.sleep(0.5)
        log = cp.kubectl("logs", name, "-n", namespace).stdout.strip()
        assert phase == "Succeeded" and log.split()[0] in ("connected", "refused"), log
        results[name] = (log.startswith("connected"), cp.get("pod", name, namespace)["status"]["podIP"])
        cp.kubectl("delete", "pod", name, "-n", namespace, "--wait=false")
    return results


def apply_run(nc, s3, namespace: str, bucket: str, steps: int = STEPS, max_restarts: int = 0,
              checkpoint_every: int = 2) -> dict:
    """A Secret with the S3 credentials and the EmpoRun, applied with kubectl as a user would."""
    cp = nc.cp
    cp.kubectl("create", "secret", "generic", "s3", "-n", namespace,
               f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
               f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}")
    run = copy.deepcopy(RUN)
    run["metadata"]["namespace"] = namespace
    run["spec"]["algorithm"]["steps"] = steps
    run["spec"]["maxRestarts"] = max_restarts
    run["spec"]["storage"] = {"uri": f"s3://{bucket}/runs", "credentialsSecretRef": {"name": "s3"},
                              "checkpointEvery": checkpoint_every}
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(run))
    return run


def s3_keys(s3, bucket: str) -> set[str]:
    return {o["Key"] for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}


def metrics_steps(s3, bucket: str, root: str) -> list[int]:
    """The step of every line of the run's metrics.jsonl under `root`, in order (empty before the first)."""
    if f"{root}metrics.jsonl" not in s3_keys(s3, bucket):
        return []
    body = s3.client().get_object(Bucket=bucket, Key=f"{root}metrics.jsonl")["Body"].read().decode()
    return [json.loads(line)["step"] for line in body.splitlines()]


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class Watch:
    """What the user sees while a run goes: every distinct EmpoRun status, and the pods' own
    timestamps (scheduled, container started, Ready) as the API server recorded them."""

    nc: Any
    namespace: str
    name: str = RUN_NAME
    statuses: list[tuple[float, dict]] = field(default_factory=list)
    pods: dict[str, dict] = field(default_factory=dict)

    def poll(self) -> dict:
        obj = self.nc.cp.get("emporun", self.name, self.namespace) or {}
        status = obj.get("status") or {}
        if not self.statuses or self.statuses[-1][1] != status:
            self.statuses.append((time.time(), status))
        for pod in json.loads(self.nc.cp.kubectl("get", "pods", "-n", self.namespace, "-o", "json").stdout)["items"]:
            self.pods[pod["metadata"]["name"]] = pod
        return status

    def until(self, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.poll()
            if predicate(status):
                return status
            time.sleep(1)
        raise AssertionError(f"{what} not within {timeout:.0f}s; {self.describe()}")

    def steps_seen(self) -> list[int]:
        return [s["progress"]["step"] for _, s in self.statuses if (s.get("progress") or {}).get("step") is not None]

    def describe(self) -> str:
        cp = self.nc.cp
        pods = cp.kubectl("get", "pods", "-n", self.namespace, "-o", "wide", check=False).stdout
        events = cp.kubectl("get", "events", "-n", self.namespace, "--sort-by=.lastTimestamp", check=False).stdout
        logs = ""
        for name in self.pods:
            out = cp.kubectl("logs", "-n", self.namespace, name, "--all-containers", "--tail=40", check=False)
            logs += f"--- {name}\n{out.stdout[-3000:]}{out.stderr[-500:]}\n"
        last = self.statuses[-1][1] if self.statuses else None
        return f"status {last}\npods:\n{pods}\nevents:\n{events[-4000:]}\nlogs:\n{logs}"

    def pod_times(self, component: str) -> dict[str, float | None]:
        """scheduled / started / ready times of the run's pod with label empo.dev/component."""
        for pod in self.pods.values():
            if (pod["metadata"].get("labels") or {}).get("empo.dev/component") == component:
                conditions = {c["type"]: c.get("lastTransitionTime") for c in pod["status"].get("conditions", [])}
                started = None
                for c in pod["status"].get("containerStatuses", []):
                    state = c.get("state") or {}
                    started = ((state.get("running") or state.get("terminated") or {}).get("startedAt")) or started
                return {"scheduled": _ts(conditions.get("PodScheduled")), "started": _ts(started),
                        "ready": _ts(conditions.get("Ready"))}
        return {}

    def first_time(self, predicate) -> float | None:
        return next((t for t, s in self.statuses if predicate(s)), None)
