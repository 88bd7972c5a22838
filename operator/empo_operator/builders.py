"""The names and labels every child of a run shares, and its small children (pure): the ConfigMap
the trainer reads, the trainer's RBAC, Events. The RayJob and its pods are rayjob's, the
NetworkPolicy network_policy's; all of them take the run already defaulted (defaults.defaulted).

Every child carries the labels below (set here, in one place). Owner references are added by the
handlers with kopf.adopt at creation time, because they need the EmpoRun's uid.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from empo_api.models import API_VERSION, PLURAL, GROUP, EmpoRun

LABEL_RUN = "empo.dev/run"
LABEL_COMPONENT = "empo.dev/component"
LABEL_ATTEMPT = "empo.dev/attempt"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "empo-operator"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# A WorkloadPriorityClass for Kueue: read from the RayJob's labels only (Kueue 0.17; otherwise it takes
# the pods' priorityClassName, spec.ray.priorityClassName), so the run's label is copied onto it.
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"

# KubeRay refuses RayJob names longer than 47 characters: it derives the RayCluster
# (<job>-<5 chars>) and its head Service (<cluster>-head-svc) names from it, and those must stay
# within 63.
RAYJOB_NAME_MAX = 47
UID_PLACEHOLDER = "00000"
# Role, ServiceAccount, ConfigMap names may be DNS subdomains (253); run names are <= 63.
NAME_MAX = 253

CONFIG_KEY = "spec.json"
# Ports the run's children agree on: its pods serve them (rayjob), its NetworkPolicy opens them.
# The driver (head) serves the run's step metrics here; the chart's PodMonitor scrapes the port by name.
TRAINING_METRICS_PORT = 9410
TRAINING_METRICS_PORT_NAME = "empo-metrics"
DASHBOARD_PORT = 8265  # Ray's dashboard, where `ray job submit` and KubeRay reach the head


def fit_name(base: str, suffix: str = "", limit: int = RAYJOB_NAME_MAX) -> str:
    """`base + suffix` if it fits in `limit`; else base cut short plus a hash of the whole base.

    Deterministic, so the operator finds its own children again after a restart, and distinct for
    two long names that share a prefix.
    """
    if len(base) + len(suffix) <= limit:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:6]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-')}-{digest}{suffix}"


def rayjob_name(run_name: str, uid: str, attempt: int) -> str:
    """The RayJob of attempt `attempt` (0 = the first) of the run with this uid: <run>-<uid[:5]>-<attempt>.

    Always two suffixes, so no run's RayJob can take the name of another run's (a run named
    `x-r1` and attempt 1 of `x` did collide); the uid part keeps a run deleted and applied again
    under the same name clear of its predecessor's RayJob while KubeRay's finalizer still holds it.
    """
    return fit_name(run_name, f"-{uid[:5]}-{attempt}")


def run_uid(run: EmpoRun) -> str:
    """The EmpoRun's uid (from the API server); a placeholder for `empo render`, which has none."""
    return (run.metadata.model_extra or {}).get("uid") or UID_PLACEHOLDER


def creation_waves(children: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Children grouped into waves created one after the other, each wave's objects concurrently.

    A RoleBinding must come after its Role: the API server lets the operator bind a Role only if it
    holds the Role's permissions itself, which it can check only once the Role exists. The RayJob
    comes last, once what its pods mount and use exists.
    """
    order = {"ConfigMap": 0, "ServiceAccount": 0, "Role": 0, "NetworkPolicy": 0, "RoleBinding": 1, "RayJob": 2}
    waves: list[list[dict[str, Any]]] = [[] for _ in range(3)]
    for child in children:
        waves[order[child["kind"]]].append(child)
    return [w for w in waves if w]


def config_name(run_name: str) -> str:
    return fit_name(run_name, "-config", NAME_MAX)


def trainer_name(run_name: str) -> str:
    return fit_name(run_name, "-trainer", NAME_MAX)


def labels(run: EmpoRun, component: str) -> dict[str, str]:
    return {LABEL_RUN: run.name, LABEL_COMPONENT: component, LABEL_MANAGED_BY: MANAGED_BY}


def object_meta(run: EmpoRun, name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": run.namespace, "labels": labels(run, component)}


def run_manifest(run: EmpoRun) -> dict[str, Any]:
    """The EmpoRun as the trainer loads it: the same shape `empo train` reads from a file."""
    return {"apiVersion": API_VERSION, "kind": "EmpoRun",
            "metadata": {"name": run.name, "namespace": run.namespace}, "spec": run.spec.to_wire()}


def build_configmap(run: EmpoRun) -> dict[str, Any]:
    """The trainer's input and the run's record: the spec as accepted, defaults and all
    (lifecycle.accepted_spec reads it back to keep those defaults on a live run). One key: the
    run's name and namespace travel in the manifest's metadata (keys `name` and `namespace` of
    earlier operators, read by no trainer, are removed from live runs' ConfigMaps)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(run, config_name(run.name), "config"),
        "data": {CONFIG_KEY: json.dumps(run_manifest(run), indent=2, sort_keys=True)},
    }


def build_trainer_rbac(run: EmpoRun) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBinding: the driver may get and patch the status of this run only."""
    name = trainer_name(run.name)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": object_meta(run, name, "trainer")},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": object_meta(run, name, "trainer"),
            "rules": [{"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"],
                       "resourceNames": [run.name], "verbs": ["get", "patch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": object_meta(run, name, "trainer"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": run.namespace}],
        },
    ]


def build_event(run: dict[str, Any], type: str, reason: str, message: str, now: str) -> dict[str, Any]:
    """A core/v1 Event about the EmpoRun (what `kubectl describe emporun` lists)."""
    meta = run["metadata"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": API_VERSION, "kind": "EmpoRun", "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid")},
        "type": type, "reason": reason, "message": message[:1024],
        "source": {"component": MANAGED_BY}, "reportingComponent": MANAGED_BY, "reportingInstance": MANAGED_BY,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }
