"""Queued runs on a real Kueue (tests/plugins/kueue.py): the control plane, KubeRay, Kueue v0.17 with
its webhooks registered, and the operator as the chart runs it (tests/integration/cluster/conftest.py).

No node runs pods here, so no RayJob ever completes: an admitted run stays Initializing, which is
all admission, queueing and preemption need. Each ClusterQueue's quota is one run's requests (as
Kueue's own Workload counts them: head, workers and KubeRay's submitter) times 1.5: one run fits,
two do not.
"""

from __future__ import annotations

import copy
import json
import os
from decimal import Decimal

import pytest
from kubernetes.utils import parse_quantity

from empo_operator import builders
from tests.integration.cluster.test_operator_cluster import MINIMAL, OPERATOR_ENV, apply
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


QUEUE = "team"


def run_manifest(name: str, queue: str = QUEUE, priority_class: str | None = None,
                 workload_priority_class: str | None = None) -> dict:
    manifest = copy.deepcopy(MINIMAL)
    manifest["metadata"]["name"] = name
    if workload_priority_class:
        manifest["metadata"]["labels"] = {builders.KUEUE_PRIORITY_LABEL: workload_priority_class}
    manifest["spec"]["queueName"] = queue
    if priority_class:
        manifest["spec"]["ray"] = {"priorityClassName": priority_class}
    return manifest


def status(cp, ns: str, name: str) -> dict:
    return (cp.get("emporun", name, ns) or {}).get("status") or {}


def condition(cp, ns: str, name: str, ctype: str) -> dict:
    return next((c for c in status(cp, ns, name).get("conditions") or [] if c["type"] == ctype), {})


def rayjob(cp, ns: str, name: str) -> dict | None:
    run = cp.get("emporun", name, ns)
    attempt = int(((run or {}).get("status") or {}).get("restarts", 0))
    return run and cp.get("rayjob", builders.rayjob_name(name, run["metadata"]["uid"], attempt), ns)


def workload(kueue, ns: str, rj: dict) -> dict | None:
    """Kueue's Workload for a RayJob (owned by it)."""
    return next((w for w in kueue.workloads(ns) if any(r.get("uid") == rj["metadata"]["uid"]
                                                       for r in w["metadata"].get("ownerReferences") or [])), None)


def wl_condition(wl: dict | None, ctype: str) -> str | None:
    return next((c["status"] for c in ((wl or {}).get("status") or {}).get("conditions") or []
                 if c["type"] == ctype), None)


def admitted(cp, ns: str, name: str) -> bool:
    """Kueue admitted the run: it lifted the suspend of its RayJob, and the run left Pending."""
    rj = rayjob(cp, ns, name)
    return bool(rj) and not rj["spec"].get("suspend") and status(cp, ns, name).get("phase") == "Initializing"


def queued(cp, ns: str, name: str) -> bool:
    rj = rayjob(cp, ns, name)
    st = status(cp, ns, name)
    return bool(rj) and rj["spec"].get("suspend") is True and st.get("phase") == "Pending" \
        and condition(cp, ns, name, "Reconciling").get("reason") == "Queued" \
        and condition(cp, ns, name, "Stalled").get("status") == "False"


def _requested(container: dict) -> dict:
    """A container's requests, a limit standing for a missing request (the API server's defaulting:
    the GPUs of a GPU pod are limits only)."""
    res = container.get("resources") or {}
    return {**(res.get("limits") or {}), **(res.get("requests") or {})}


def requests(wl: dict) -> dict[str, Decimal]:
    """What Kueue counts for a Workload: per pod, the sum of its containers' requests (or its largest
    init container's, if larger), times the pod set's count."""
    total: dict[str, Decimal] = {}
    for ps in wl["spec"]["podSets"]:
        spec = ps["template"]["spec"]
        pod: dict[str, Decimal] = {}
        for c in spec.get("containers") or []:
            for r, q in _requested(c).items():
                pod[r] = pod.get(r, Decimal(0)) + parse_quantity(q)
        for c in spec.get("initContainers") or []:
            for r, q in _requested(c).items():
                pod[r] = max(pod.get(r, Decimal(0)), parse_quantity(q))
        for r, q in pod.items():
            total[r] = total.get(r, Decimal(0)) + q * ps["count"]
    return total


def one_run_queue(kueue, name: str, wl: dict, preemption: dict | None = None) -> None:
    """A ResourceFlavor and a ClusterQueue whose quota is 1.5 times `wl`'s requests."""
    quota = [{"name": r, "nominalQuota": f"{int(q * 1500)}m" if r == "cpu" else str(int(q * Decimal('1.5')))}
             for r, q in sorted(requests(wl).items())]
    cq = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": name},
          "spec": {"namespaceSelector": {}, "resourceGroups": [{
              "coveredResources": [q["name"] for q in quota],
              "flavors": [{"name": name, "resources": quota}]}]}}
    if preemption:
        cq["spec"]["preemption"] = preemption
    kueue.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": name}}, cq)


def local_queue(kueue, ns: str, cluster_queue: str, name: str = QUEUE) -> None:
    kueue.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                 "metadata": {"name": name, "namespace": ns}, "spec": {"clusterQueue": cluster_queue}})


def test_queue_name_without_kueue_says_kueue_is_not_installed(control_plane, cluster_namespace, empo_release,
                                                               chart_operator):
    """Runs first in this file, before the session's Kueue installs its CRDs."""
    cp, ns = control_plane, cluster_namespace
    if cp.kubectl("get", "crd", "localqueues.kueue.x-k8s.io", "--ignore-not-found", "-o", "name").stdout.strip():
        pytest.skip("Kueue was started earlier in this session; this needs a control plane without it")
    op = chart_operator(empo_release, **OPERATOR_ENV)
    apply(cp, ns, run_manifest("nokueue"))
    stalled = wait_for(lambda: (c := condition(cp, ns, "nokueue", "Stalled")).get("reason") == "KueueNotInstalled"
                       and c, timeout=60, what=f"Stalled KueueNotInstalled (operator log: {op.log_path})")
    assert stalled["status"] == "True" and "'team'" in stalled["message"]
    rj = rayjob(cp, ns, "nokueue")
    assert rj["spec"]["suspend"] is True and rj["metadata"]["labels"][builders.KUEUE_QUEUE_LABEL] == QUEUE
    assert status(cp, ns, "nokueue")["phase"] == "Pending"


def test_kueue_admits_one_run_queues_the_second_and_admits_it_when_the_first_goes(
        control_plane, cluster_namespace, empo_release, chart_operator, kueue):
    cp, ns = control_plane, cluster_namespace
    cq = f"empo-one-{os.getpid()}"
    op = chart_operator(empo_release, **OPERATOR_ENV)
    local_queue(kueue, ns, cq)

    # A queueName naming no LocalQueue: said on the run, at its first status.
    apply(cp, ns, run_manifest("lost", queue="nosuch"))
    lost = wait_for(lambda: (c := condition(cp, ns, "lost", "Stalled")).get("reason") == "LocalQueueNotFound" and c,
                    timeout=30, what=f"Stalled LocalQueueNotFound (operator log: {op.log_path})")
    assert lost["status"] == "True" and "nosuch" in lost["message"]
    assert rayjob(cp, ns, "lost")["spec"]["suspend"] is True

    apply(cp, ns, run_manifest("first"))
    rj = wait_for(lambda: rayjob(cp, ns, "first"), timeout=60, what=f"first's RayJob (operator log: {op.log_path})")
    wl = wait_for(lambda: workload(kueue, ns, rj), timeout=60, what=f"first's Workload (kueue: {kueue.workdir})")
    # Kueue counts KubeRay's submitter as a pod set of its own.
    assert len(wl["spec"]["podSets"]) == 1 + len(rj["spec"]["rayClusterSpec"]["workerGroupSpecs"]) + 1
    one_run_queue(kueue, cq, wl)
    wait_for(lambda: admitted(cp, ns, "first"), timeout=60,
             what=f"first admitted (operator log: {op.log_path}; kueue log: {kueue.component.log_path})")
    assert condition(cp, ns, "first", "Stalled").get("status") == "False"

    apply(cp, ns, run_manifest("second"))
    wait_for(lambda: queued(cp, ns, "second"), timeout=60, what="second queued")
    rj2 = rayjob(cp, ns, "second")
    wl2 = wait_for(lambda: (w := workload(kueue, ns, rj2)) and wl_condition(w, "QuotaReserved") == "False" and w,
                   timeout=60, what="second's Workload pending")
    assert wl_condition(wl2, "Admitted") != "True"
    table = cp.kubectl("get", "emporuns", "-n", ns).stdout
    rows = {line.split()[0]: line.split()[1] for line in table.splitlines()[1:]}
    assert rows["first"] == "Initializing" and rows["second"] == "Pending", table
    assert admitted(cp, ns, "first")  # nothing moved it

    cp.kubectl("delete", "emporun", "first", "-n", ns, "--wait=false")
    wait_for(lambda: admitted(cp, ns, "second"), timeout=120, what="second admitted once first is gone")
    assert status(cp, ns, "second")["restarts"] == 0

    # Another queue for the admitted run: Kueue's webhook refuses to relabel a running RayJob, so the
    # label waits for the next suspend while the operator goes on reconciling the run.
    cp.kubectl("patch", "emporun", "second", "-n", ns, "--type=merge", "-p", '{"spec":{"queueName":"other"}}')
    generation = cp.get("emporun", "second", ns)["metadata"]["generation"]
    wait_for(lambda: status(cp, ns, "second").get("observedGeneration") == generation, timeout=60,
             what=f"the new queueName observed (operator log: {op.log_path})")
    assert rayjob(cp, ns, "second")["metadata"]["labels"][builders.KUEUE_QUEUE_LABEL] == QUEUE
    assert admitted(cp, ns, "second") and condition(cp, ns, "second", "Stalled").get("status") == "False"
    cp.kubectl("patch", "emporun", "second", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_for(lambda: (rj := rayjob(cp, ns, "second"))["spec"].get("suspend") is True
             and rj["metadata"]["labels"][builders.KUEUE_QUEUE_LABEL] == "other", timeout=60,
             what="suspended and moved to the other queue")
    assert condition(cp, ns, "lost", "Stalled").get("reason") == "LocalQueueNotFound"  # still nothing admits it


def test_a_higher_priority_run_preempts_a_lower_one_which_waits_and_comes_back(
        control_plane, cluster_namespace, empo_release, chart_operator, kueue):
    cp, ns = control_plane, cluster_namespace
    tag = f"{os.getpid()}"
    cq, low, high = f"empo-prio-{tag}", f"empo-low-{tag}", f"empo-high-{tag}"
    # Kueue 0.17 takes a RayJob's priority from its kueue.x-k8s.io/priority-class label (a
    # WorkloadPriorityClass; the operator copies the run's label) or else from its pods'
    # priorityClassName (spec.ray.priorityClassName). One of each.
    cp.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": low},
        "value": 100, "preemptionPolicy": "Never"}))
    kueue.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
                 "metadata": {"name": high}, "value": 1000})
    op = chart_operator(empo_release, **OPERATOR_ENV)
    local_queue(kueue, ns, cq)
    apply(cp, ns, run_manifest("low", priority_class=low))
    rj = wait_for(lambda: rayjob(cp, ns, "low"), timeout=60, what=f"low's RayJob (operator log: {op.log_path})")
    wl = wait_for(lambda: workload(kueue, ns, rj), timeout=60, what="low's Workload")
    assert wl["spec"].get("priority") == 100
    one_run_queue(kueue, cq, wl, preemption={"withinClusterQueue": "LowerPriority"})
    wait_for(lambda: admitted(cp, ns, "low"), timeout=60,
             what=f"low admitted (kueue log: {kueue.component.log_path})")

    apply(cp, ns, run_manifest("high", workload_priority_class=high))
    wait_for(lambda: admitted(cp, ns, "high"), timeout=120,
             what=f"high admitted, preempting low (kueue log: {kueue.component.log_path})")
    # Kueue suspended low's RayJob; the run waits in its queue again, neither failed nor restarted.
    wait_for(lambda: queued(cp, ns, "low"), timeout=60, what="low back in its queue")
    st = status(cp, ns, "low")
    assert st["restarts"] == 0 and not st.get("preemptions")
    assert st["rayJobName"] == rj["metadata"]["name"]  # the same attempt waits
    evicted = workload(kueue, ns, rj)
    assert "True" in (wl_condition(evicted, "Evicted"), wl_condition(evicted, "Preempted")), evicted["status"]

    cp.kubectl("delete", "emporun", "high", "-n", ns, "--wait=false")
    wait_for(lambda: admitted(cp, ns, "low"), timeout=120, what="low admitted again once high is gone")
    assert status(cp, ns, "low")["restarts"] == 0
