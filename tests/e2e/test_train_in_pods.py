"""The user's whole path, in pods: `helm install` the chart, `kubectl apply -f` an EmpoRun, and the
run trains in KubeRay's pods on a real node until Succeeded, with its artifacts in S3.

Nothing here writes a status by hand: the kubelet, KubeRay and the trainer produce every one."""

from __future__ import annotations

import json

import pytest

from tests.e2e.flow import RUN_NAME, STEPS, Watch, apply_run

pytestmark = [pytest.mark.timeout(2400)]


def test_an_emporun_applied_with_kubectl_trains_in_pods_to_succeeded(node_cluster, pod_s3, chart_operator_pod):
    nc, cp, s3 = node_cluster, node_cluster.cp, pod_s3
    operator_ns = chart_operator_pod
    (operator_pod,) = nc.pods(operator_ns)
    assert operator_pod["status"]["phase"] == "Running"
    # The chart's restricted security context, as the kubelet ran it.
    assert operator_pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True

    ns = cp.create_namespace("e2e")
    bucket = s3.new_bucket("e2e")
    apply_run(nc, s3, ns, bucket)
    watch = Watch(nc, ns)
    watch.until(lambda s: s.get("phase") == "Running", 900, "phase Running")
    final = watch.until(lambda s: s.get("phase") in ("Succeeded", "Failed"), 1500, "the run to end")
    assert final["phase"] == "Succeeded", watch.describe()

    # `kubectl get emporuns` showed the steps move, with reward and entropy.
    steps = watch.steps_seen()
    assert steps[-1] == STEPS and len(set(steps)) >= 2, watch.statuses
    assert {"reward", "semanticEntropy"} <= final["progress"].keys(), final
    assert final["latestCheckpoint"]["step"] == STEPS and final["lastEval"]["step"] == STEPS, final
    table = cp.kubectl("get", "emporuns", "-n", ns).stdout
    assert "Succeeded" in table and f"{STEPS}/{STEPS}" in table, table

    # Artifacts in S3 under <uri>/<namespace>/<run>/, written from the pods with the Secret's keys.
    keys = {o["Key"] for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}
    root = f"runs/{ns}/{RUN_NAME}/"
    assert {f"{root}checkpoints/LATEST", f"{root}report.html", f"{root}eval/step-{STEPS:06d}.json",
            f"{root}checkpoints/step-{STEPS:06d}/model.safetensors"} <= keys, sorted(keys)
    metrics = s3.client().get_object(Bucket=bucket, Key=f"{root}metrics.jsonl")["Body"].read().decode()
    assert [json.loads(line)["step"] for line in metrics.splitlines()] == list(range(1, STEPS + 1))

    # Every pod of the run (head, learner, KubeRay's submitter) carries the run's label, which is
    # what the run's NetworkPolicy admits: no engine enforces policies on this node, so this checks
    # that the policy would let in each pod that really talked to the head.
    components = {p["metadata"]["labels"].get("empo.dev/component") for p in watch.pods.values()
                  if p["metadata"]["labels"].get("empo.dev/run") == RUN_NAME}
    assert components == {"head", "learner", "submitter"}, {n: p["metadata"]["labels"] for n, p in watch.pods.items()}
    assert len(watch.pods) == 3

    # The RayCluster's pods are gone once the job finished; only the submitter's Job pod is left.
    watch.until(lambda _: not nc.pods(ns, "ray.io/cluster"), 180, "the Ray pods to go")


def s3_keys(s3, bucket: str) -> set[str]:
    return {o["Key"] for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}


def test_a_lost_learner_pod_restarts_the_run_from_its_checkpoint(node_cluster, pod_s3, chart_operator_pod):
    """The learner's pod deleted mid-run (a lost node, an eviction): the attempt fails, the operator
    starts the next one, which resumes from checkpoints/LATEST; every step is in metrics.jsonl once."""
    nc, cp, s3 = node_cluster, node_cluster.cp, pod_s3
    steps = 16  # long enough that the pod goes mid-run (about 6 s a step)
    ns = cp.create_namespace("lost")
    bucket = s3.new_bucket("lost")
    apply_run(nc, s3, ns, bucket, steps=steps, max_restarts=1)
    watch = Watch(nc, ns)
    root = f"runs/{ns}/{RUN_NAME}/"
    # The first checkpoint committed in S3 (LATEST is written last), then the learner's pod goes.
    watch.until(lambda _: f"{root}checkpoints/LATEST" in s3_keys(s3, bucket), 900, "the first checkpoint")
    (learner,) = nc.pods(ns, "empo.dev/component=learner")
    cp.kubectl("delete", "pod", learner["metadata"]["name"], "-n", ns, "--wait=false")
    at = watch.poll()
    assert (at.get("progress") or {}).get("step", 0) < steps - 4, f"the run was nearly done before its pod went: {at}"

    watch.until(lambda s: s.get("restarts") == 1, 600, "the operator to start attempt 1")
    final = watch.until(lambda s: s.get("phase") in ("Succeeded", "Failed"), 1500, "the run to end")
    assert final["phase"] == "Succeeded" and final["restarts"] == 1, watch.describe()
    assert {f"{root}attempts/attempt-000001.json", f"{root}attempts/attempt-000002.json"} <= s3_keys(s3, bucket)
    metrics = s3.client().get_object(Bucket=bucket, Key=f"{root}metrics.jsonl")["Body"].read().decode()
    assert [json.loads(line)["step"] for line in metrics.splitlines()] == list(range(1, steps + 1))
