"""The user's whole path, in pods: `helm install` the chart, `kubectl apply -f` an EmpoRun, and the
run trains in KubeRay's pods on a real node until Succeeded, with its artifacts in S3.

Nothing here writes a status by hand: the kubelet, KubeRay and the trainer produce every one."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from tests.e2e.flow import (KUBERAY_LABELS, KUBERAY_NAMESPACE, RUN_NAME, STEPS, Watch, apply_run, can_connect,
                            metrics_steps, s3_keys)
from tests.e2e.policy_check import allowed, cluster_view
from tests.plugins.node import NODE_NAME

pytestmark = [pytest.mark.timeout(2400)]


def test_an_emporun_applied_with_kubectl_trains_in_pods_to_succeeded(node_cluster, pod_s3, chart_operator_pod):
    nc, cp, s3 = node_cluster, node_cluster.cp, pod_s3
    operator_ns = chart_operator_pod
    (operator_pod,) = nc.pods(operator_ns)
    assert operator_pod["status"]["phase"] == "Running"
    # The chart's restricted security context, as the kubelet ran it.
    assert operator_pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True

    ns = cp.create_namespace("e2e")
    # Every pod of the run (head, learner, KubeRay's submitter and the init container KubeRay adds)
    # passes the restricted Pod Security Standard, enforced by the API server's admission.
    cp.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    bucket = s3.new_bucket("e2e")
    apply_run(nc, s3, ns, bucket)
    watch = Watch(nc, ns)
    watch.until(lambda s: s.get("phase") == "Running", 900, "phase Running")
    # Ray token auth is on (KubeRay's authOptions): the head's dashboard refuses a job without the
    # cluster's token, from this node as from any pod, and takes the token KubeRay generated.
    (head,) = nc.pods(ns, "empo.dev/component=head")
    dashboard = f"http://{head['status']['podIP']}:8265/api/jobs/"
    job = json.dumps({"entrypoint": "echo intruder"}).encode()
    assert dashboard_status(dashboard, job) == 401
    assert dashboard_status(dashboard, job, token="not-the-token") == 403
    secret = json.loads(cp.kubectl("get", "secret", head["metadata"]["labels"]["ray.io/cluster"], "-n", ns,
                                   "-o", "json").stdout)
    assert dashboard_status(dashboard, token=base64.b64decode(secret["data"]["auth_token"]).decode()) == 200
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


def dashboard_status(url: str, body: bytes | None = None, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_drain_mid_run_costs_no_step(node_cluster, pod_s3, chart_operator_pod, flow_log):
    """`kubectl drain` of the node under a running run (its head, its learner and the submitter
    evicted): each Ray container's preStop hook has the driver finish the step in progress and
    commit it, the run resumes from that step once the node takes pods again, and it ends
    Succeeded with maxRestarts 0, every step in metrics.jsonl once."""
    nc, cp, s3 = node_cluster, node_cluster.cp, pod_s3
    steps = 16  # long enough that the drain comes mid-run (about 6 s a step)
    ns = cp.create_namespace("drain")
    bucket = s3.new_bucket("drain")
    # No periodic checkpoint before the end: only the preemption's own can save the steps done.
    apply_run(nc, s3, ns, bucket, steps=steps, max_restarts=0, checkpoint_every=1000)
    watch = Watch(nc, ns)
    root = f"runs/{ns}/{RUN_NAME}/"

    def logged_steps() -> list[int]:
        return metrics_steps(s3, bucket, root)

    watch.until(lambda _: len(logged_steps()) >= 2, 900, "two steps trained")
    earlier_pods = cluster_view(cp)[1]
    (head,) = nc.pods(ns, "empo.dev/component=head")
    ip = head["status"]["podIP"]
    foreign = cp.create_namespace("tenant")
    probes = can_connect(nc, [("kuberay", KUBERAY_NAMESPACE, KUBERAY_LABELS, ip, 8265),
                              ("impostor", foreign, KUBERAY_LABELS, ip, 8265),
                              ("neighbour", ns, {"app": "other"}, ip, 6379)])
    before = logged_steps()
    assert before[-1] < steps - 4, f"the run was nearly done before the drain: {before}"
    # Cordons the node and evicts the run's pods through the Eviction API, waiting until they are gone.
    try:
        cp.kubectl("drain", NODE_NAME, f"--pod-selector=empo.dev/run={RUN_NAME}", "--ignore-daemonsets",
                   "--delete-emptydir-data", "--timeout=300s", timeout=330)
        stopped = watch.until(lambda s: s.get("lastPreemption"), 60, "the trainer's preemption report")["lastPreemption"]
    finally:
        cp.kubectl("uncordon", NODE_NAME)  # the node serves the tests after this one too

    final = watch.until(lambda s: s.get("phase") in ("Succeeded", "Failed"), 1500, "the run to end")
    assert final["phase"] == "Succeeded", watch.describe()
    at = stopped["step"]
    # Zero steps lost: the step in progress when the pods were told to stop was finished and
    # committed, not abandoned; the run went on from it.
    assert at >= before[-1] and stopped["message"].startswith(
        f"preempted at step {at}: checkpoint step-{at} committed"), stopped
    assert stopped["attempt"] == 0 and final["restarts"] == final.get("preemptions", 0) <= 1, final
    keys = s3_keys(s3, bucket)
    assert {f"{root}checkpoints/step-{at:06d}/empo-manifest.json", f"{root}attempts/attempt-000002.json"} <= keys
    assert logged_steps() == list(range(1, steps + 1))

    # The run's NetworkPolicy against what really went over the wire (no engine enforces it here,
    # tests/e2e/policy_check.py): every connection of the run's pods in both attempts (the head to S3,
    # DNS and the API server, the learners and the submitter to the head, the API server's proxy for
    # KubeRay) is one the policy admits; of the probes, KubeRay's pod in KubeRay's namespace may reach
    # the dashboard, a pod wearing KubeRay's label in another namespace may not, nor may a pod of the
    # run's namespace that is not the run's reach Ray's GCS.
    recorded = flow_log.stop()
    policies, pods, namespaces = cluster_view(cp)
    seen = {p["status"]["podIP"]: {"name": n, "namespace": ns, "labels": p["metadata"].get("labels") or {}}
            for n, p in watch.pods.items() if (p.get("status") or {}).get("podIP")}  # both attempts'
    pods = {**seen, **earlier_pods, **pods}
    where = {"kuberay": KUBERAY_NAMESPACE, "impostor": foreign, "neighbour": ns}
    for name, (_, probe_ip) in probes.items():
        pods[probe_ip] = {"name": name, "namespace": where[name],
                          "labels": {"app": "other"} if name == "neighbour" else KUBERAY_LABELS}
    probe_ips = {probe_ip for _, probe_ip in probes.values()}
    run_ips = {i for i, p in pods.items() if p["labels"].get("empo.dev/run") == RUN_NAME and p["namespace"] == ns}
    mine = [f for f in recorded if {f.src, f.dst} & run_ips and f.src not in probe_ips]
    assert {f.port for f in mine} >= {8265, 6379}, mine  # the submitter's and the learners' way in
    refused = [(f, why) for f in mine for ok, why in [allowed(f, policies, pods, namespaces, nc.node_ip)] if not ok]
    assert refused == [], refused
    verdict = {name: allowed(next(f for f in recorded if f.src == probe_ip and f.dst == ip), policies, pods,
                             namespaces, nc.node_ip)[0] for name, (_, probe_ip) in probes.items()}
    assert verdict == {"kuberay": True, "impostor": False, "neighbour": False}, verdict
    assert all(reached for reached, _ in probes.values())  # nothing enforced: the policy, not luck, says no
