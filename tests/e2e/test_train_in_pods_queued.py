"""A queued run on the node, preempted by Kueue for real: Kueue (tests/plugins/kueue.py, v0.17 with its
webhooks) admits one run into a ClusterQueue that holds one; a higher-priority run makes Kueue suspend
the first one's RayJob; KubeRay deletes its pods, whose preStop hooks have the driver commit the step
in progress; the run waits in its queue (not failed, not restarted) and, admitted again once the
other run ends, resumes from that checkpoint with no lost step and every metrics line once.

Runs after the other node tests (file order): Kueue's CRDs stay installed once it has started."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import yaml

from empo_operator import builders
from tests.integration.cluster.test_kueue import local_queue, one_run_queue, rayjob, workload
from tests.e2e.flow import RUN, Watch, metrics_steps, s3_keys
from tests.plugins.kueue import start_kueue
from tests.waiting import wait_for

pytestmark = [pytest.mark.timeout(2400)]

QUEUE = "team"


def queued_run(name: str, namespace: str, bucket: str, steps: int, priority: str) -> dict:
    """The e2e run, in a queue, with a Kueue WorkloadPriorityClass and no periodic checkpoint (only
    the preemption's own can save the steps done before it)."""
    run = copy.deepcopy(RUN)
    run["metadata"] = {"name": name, "namespace": namespace, "labels": {builders.KUEUE_PRIORITY_LABEL: priority}}
    run["spec"]["queueName"] = QUEUE
    run["spec"]["algorithm"]["steps"] = steps
    run["spec"]["storage"] = {"uri": f"s3://{bucket}/runs", "credentialsSecretRef": {"name": "s3"},
                              "checkpointEvery": 1000}
    return run


def test_a_run_preempted_by_kueue_checkpoints_in_its_pods_and_resumes_when_admitted_again(
        node_cluster, pod_s3, chart_operator_pod):
    nc, cp, s3 = node_cluster, node_cluster.cp, pod_s3
    ns = cp.create_namespace("queued")
    bucket = s3.new_bucket("queued")
    cp.kubectl("create", "secret", "generic", "s3", "-n", ns, f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
               f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}")
    steps = 12
    low_root = f"runs/{ns}/low/"
    with tempfile.TemporaryDirectory(prefix="empo-kueue-node-") as workdir, \
            start_kueue(cp, Path(workdir)) as kueue:
        try:
            kueue.apply(*({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
                           "metadata": {"name": f"{ns}-{name}"}, "value": value}
                          for name, value in (("low", 100), ("high", 1000))))
            local_queue(kueue, ns, ns, QUEUE)
            cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(queued_run("low", ns, bucket, steps, f"{ns}-low")))
            rj = wait_for(lambda: rayjob(cp, ns, "low"), timeout=60, what="low's RayJob")
            wl = wait_for(lambda: workload(kueue, ns, rj), timeout=60, what="low's Workload")
            # Room for one run (its requests times 1.5); a lower priority is preempted within the queue.
            one_run_queue(kueue, ns, wl, preemption={"withinClusterQueue": "LowerPriority"})
            low = Watch(nc, ns, name="low")
            low.until(lambda _: len(metrics_steps(s3, bucket, low_root)) >= 2, 900, "two steps of low")
            before = metrics_steps(s3, bucket, low_root)
            assert before[-1] < steps - 4, f"low was nearly done before the preemption: {before}"

            cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(queued_run("high", ns, bucket, 2, f"{ns}-high")))
            stopped = low.until(lambda s: s.get("lastPreemption"), 300,
                                f"low's preemption report (kueue: {kueue.component.log_path})")["lastPreemption"]
            high = Watch(nc, ns, name="high")
            done = high.until(lambda s: s.get("phase") in ("Succeeded", "Failed"), 900, "high to end")
            assert done["phase"] == "Succeeded", high.describe()
            final = low.until(lambda s: s.get("phase") in ("Succeeded", "Failed"), 1200, "low to end")
        finally:
            cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)

    assert final["phase"] == "Succeeded", low.describe()
    at = stopped["step"]
    # The step in progress when Kueue suspended the RayJob was committed, not abandoned, and the same
    # attempt resumed from it when Kueue admitted the run again: no restart, no lost step.
    assert at >= before[-1] and stopped["message"].startswith(f"preempted at step {at}: checkpoint step-{at} committed")
    assert stopped["attempt"] == 0 and final["restarts"] == 0, final
    # Between the preemption and its readmission the run said it waits in its queue.
    after = [s for _, s in low.statuses][next(i for i, (_, s) in enumerate(low.statuses) if s.get("lastPreemption")):]
    assert any(s.get("phase") == "Pending" and any(c["type"] == "Reconciling" and c.get("reason") == "Queued"
                                                   for c in s.get("conditions") or []) for s in after), \
        [(s.get("phase"), s.get("message")) for s in after]
    assert f"{low_root}checkpoints/step-{at:06d}/empo-manifest.json" in s3_keys(s3, bucket)
    assert metrics_steps(s3, bucket, low_root) == list(range(1, steps + 1))
