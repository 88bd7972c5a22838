"""What keeps a run's pods from running, produced for real on the node and read back from the
EmpoRun: the kubelet, the scheduler, the API server's admission and KubeRay make each cause; the
operator turns the first one into the run's Stalled condition naming the object it came from."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.e2e.flow import RUN, RUN_NAME, Watch

pytestmark = [pytest.mark.timeout(900)]

SMALL = {"cpu": "100m", "memory": "512Mi"}


def run_with(namespace: str, bucket: str, head: dict | None = None, image: str | None = None, **spec) -> dict:
    run = copy.deepcopy(RUN)
    run["metadata"]["namespace"] = namespace
    run["spec"]["ray"] = {"head": head or SMALL, "worker": SMALL} | ({"image": image} if image else {})
    run["spec"]["storage"] = {"uri": f"s3://{bucket}/runs"}
    run["spec"].update(spec)
    return run


def stalled(status: dict) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == "Stalled"), {})


def test_each_cause_that_keeps_pods_from_running_shows_on_the_run(node_cluster, pod_s3, chart_operator_pod):
    nc, cp = node_cluster, node_cluster.cp
    bucket = pod_s3.new_bucket("causes")
    cases = {
        # more CPU than the node has; a short pre-running deadline then fails the run with the cause
        "Unschedulable": dict(head={"cpu": "64", "memory": "512Mi"}, preRunningDeadlineSeconds=45),
        "ImagePullBackOff": dict(image="empo.local/no-such-image:1"),
        # an image without Ray: KubeRay's `ray start` exits 127, again and again
        "CrashLoopBackOff": dict(image=nc.images["operator"]),
        # too little memory for Ray's head processes
        "OOMKilled": dict(head={"cpu": "100m", "memory": "256Mi"}),
        # a namespace whose quota allows no pod: the API server refuses KubeRay's head pod
        "PodCreationRefused": dict(),
        # more node disk than its limit (Ray's logs alone pass 1 MiB): the kubelet's eviction manager
        # evicts the head, KubeRay deletes it and makes a new one, and the cause must outlive the pod.
        # 1Gi: at 512Mi a slow start left `ray start` too little free memory for its minimum object
        # store (75 MiB), so the head crash-looped before it wrote enough to be evicted.
        "Evicted": dict(head={"cpu": "100m", "memory": "1Gi", "ephemeralStorage": "1Mi"}),
    }
    watches = {}
    try:
        _each_cause_shows(nc, cp, bucket, cases, watches)
    finally:  # a failed case must not leave pods that starve the next test of CPU
        for watch in watches.values():
            cp.kubectl("delete", "namespace", watch.namespace, "--wait=false")


def _each_cause_shows(nc, cp, bucket: str, cases: dict, watches: dict) -> None:
    for reason, spec in cases.items():
        ns = cp.create_namespace(reason.lower())
        if reason == "PodCreationRefused":
            cp.kubectl("create", "quota", "no-pods", "-n", ns, "--hard=pods=0")
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(run_with(ns, bucket, **spec)))
        watches[reason] = Watch(nc, ns)
    seen = {}
    for reason, watch in watches.items():
        status = watch.until(lambda s: stalled(s).get("reason") == reason, 420, f"Stalled {reason}")
        seen[reason] = stalled(status)
        assert status["phase"] in ("Initializing", "Pending"), status
    assert "Insufficient cpu" in seen["Unschedulable"]["message"]
    assert "no-such-image" in seen["ImagePullBackOff"]["message"]
    assert "exit code 127" in seen["CrashLoopBackOff"]["message"]
    assert "spec.ray.head.memory" in seen["OOMKilled"]["message"]
    assert "quota" in seen["PodCreationRefused"]["message"]  # exceeded (or, this early, not yet counted)
    assert "ephemeral" in seen["Evicted"]["message"], seen["Evicted"]
    for reason, condition in seen.items():
        assert condition["status"] == "True" and ("pod " in condition["message"] or "RayCluster " in condition["message"])
    # The run that can never be placed ends at its pre-running deadline, saying why.
    final = watches["Unschedulable"].until(lambda s: s.get("phase") == "Failed", 180, "the deadline")
    failed = next(c for c in final["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PreRunningDeadlineExceeded" and "Unschedulable" in failed["message"], failed
    events = cp.kubectl("get", "events", "-n", watches["ImagePullBackOff"].namespace,
                        "--field-selector", f"involvedObject.name={RUN_NAME}", "-o", "yaml").stdout
    assert "no-such-image" in events  # `kubectl describe emporun` shows it too (ErrImagePull first)
