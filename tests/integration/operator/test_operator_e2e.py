"""The operator for real (`python -m empo_operator`, kopf over HTTP) against the KMock emulator.

The tests play KubeRay by writing RayJob status, and the trainer with its ProgressReporter. What
KMock does not do (garbage collection, resourceVersion, 201 on create), the tests check as
properties of the objects the operator writes: ownerReferences, one RayJob per attempt.
"""

import copy
import re

import kubernetes_validate
import pytest

from empo_api import schema_check
from empo_trainer.status_reporter import ProgressReporter
from tests.plugins.kmock_server import wait_for

pytestmark = pytest.mark.timeout(90)


def handler_runs(metrics: str, handler: str) -> float:
    m = re.search(rf'^empo_operator_reconciles_total\{{handler="{handler}"\}} (\S+)$', metrics, re.M)
    return float(m.group(1)) if m else 0.0


def run_manifest(tiny, **spec):
    doc = copy.deepcopy(tiny)
    doc["metadata"]["name"] = "smoke"
    doc["spec"].update(spec)
    return doc


def owned_by(obj, run):
    return [(r["kind"], r["name"], r["uid"], r.get("controller")) for r in obj["metadata"].get("ownerReferences", [])] \
        == [("EmpoRun", run["metadata"]["name"], run["metadata"]["uid"], True)]


def test_run_lifecycle_to_succeeded(operator, api, math_s3, rayjob_schema, kube_emulator):
    op = operator()
    run = api.create_run(math_s3)
    name = run["metadata"]["name"]
    rj = wait_for(lambda: api.attempt(name), what="the RayJob")
    rjn = rj["metadata"]["name"]

    # Children: owned by the run (KMock has no garbage collector: the reference is the contract).
    children = {p: api.objects(p) for p in ("configmaps", "serviceaccounts", "roles", "rolebindings", "rayjobs")}
    assert set(children["configmaps"]) == {f"{name}-config"}
    assert set(children["serviceaccounts"]) == set(children["roles"]) == set(children["rolebindings"]) == {f"{name}-trainer"}
    assert set(children["rayjobs"]) == {rjn}
    for plural, objs in children.items():
        for obj in objs.values():
            assert owned_by(obj, run), (plural, obj["metadata"])
            if plural == "rayjobs":
                assert schema_check.check(obj, rayjob_schema) == []
            else:
                kubernetes_validate.validate(obj, "1.32", strict=True)
    assert rj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"] \
        == "registry.example/empo-trainer:test"  # EMPO_TRAINER_IMAGE

    started = api.wait_phase(name, "Initializing")["startTime"]  # the first attempt exists
    api.kuberay_reports(rjn, jobDeploymentStatus="Initializing")
    api.kuberay_reports(rjn, jobDeploymentStatus="Running", jobStatus="RUNNING", rayClusterName=f"{name}-x7k2p",
                        dashboardURL=f"{name}-head-svc.ml:8265", startTime="2025-01-01T00:00:00Z")
    status = api.wait_phase(name, "Running")
    assert (status["rayClusterName"], status["dashboardURL"]) == (f"{name}-x7k2p", f"{name}-head-svc.ml:8265")
    assert status["startTime"] == started  # set once, for the first attempt
    assert api.condition(name, "Ready")["status"] == "True"
    assert api.condition(name, "Reconciling")["status"] == "False"

    # The trainer reports through the status subresource with a reporter like the driver's.
    reporter = ProgressReporter(name, api.ns, kubeconfig=str(kube_emulator.kubeconfig), min_interval=0.05)
    for step in range(1, 4):
        reporter.report({"step": step, "totalSteps": 400, "reward": 0.5 + step / 100, "semanticEntropy": 0.9})
    reporter.checkpoint(3, "s3://empo-runs/experiments/ns/qwen/checkpoints/step-000003")
    reporter.eval({"step": 3, "accuracy": {"math500": 0.5, "aime24": 0.1}, "average": 0.3})
    reporter.close()
    status = wait_for(lambda: (s := api.status(name)).get("stepProgress") == "3/400" and s.get("lastEval") and s,
                      what="the trainer's report")
    assert status["progress"]["reward"] == pytest.approx(0.53)
    assert status["latestCheckpoint"]["step"] == 3 and status["lastEval"]["average"] == 0.3
    assert status["phase"] == "Running"  # the trainer's patch leaves the operator's fields alone

    api.kuberay_reports(rjn, jobDeploymentStatus="Complete", jobStatus="SUCCEEDED", endTime="2025-01-02T00:00:00Z")
    status = api.wait_phase(name, "Succeeded")
    assert status["completionTime"] == "2025-01-02T00:00:00Z"
    assert api.condition(name, "Succeeded")["status"] == "True" and api.condition(name, "Ready")["status"] == "True"
    events = wait_for(lambda: {(e["type"], e["reason"]) for e in api.objects("events").values()
                               if e["involvedObject"]["name"] == name} >= {("Normal", "Running"), ("Normal", "Succeeded")}
                      and api.objects("events"), what="Events")
    assert all(e["involvedObject"]["uid"] == run["metadata"]["uid"] for e in events.values())
    # One POST per child: nothing was created twice.
    counts = kube_emulator.request_counts()
    assert counts[("CREATE", "rayjobs")] >= 1 and len(api.objects("rayjobs")) == 1
    metrics = op.metrics()
    assert handler_runs(metrics, "reconcile_run") == 1, metrics
    assert "empo_operator_reconcile_seconds_bucket" in metrics


def test_failed_attempts_restart_then_fail(operator, api, tiny):
    operator()
    api.create_run(run_manifest(tiny, maxRestarts=1))
    first = wait_for(lambda: api.attempt("smoke", 0), what="attempt 0")["metadata"]["name"]
    api.kuberay_reports(first, jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed",
                        message="driver exited with 1")
    rj1 = wait_for(lambda: api.attempt("smoke", 1), what="attempt 1")
    assert api.rayjob(first) is None  # the failed attempt's cluster is gone
    env = {e["name"]: e.get("value") for e in
           rj1["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EMPO_ATTEMPT"] == "1" and rj1["metadata"]["labels"]["empo.dev/attempt"] == "1"
    status = api.status("smoke")
    assert status["restarts"] == 1 and status["rayJobName"] == rj1["metadata"]["name"]
    assert status["phase"] in ("Restarting", "Initializing")

    api.kuberay_reports(rj1["metadata"]["name"], jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed")
    status = api.wait_phase("smoke", "Failed")
    assert api.condition("smoke", "Stalled")["status"] == "True"
    assert api.condition("smoke", "Failed")["reason"] == "RestartsExhausted"
    assert set(api.objects("rayjobs")) == {rj1["metadata"]["name"]}  # no third attempt
    assert status["completionTime"]


def _running_then_preempted(api, tiny, kube_emulator, step: int) -> str:
    """A run with maxRestarts 0 whose attempt 0 runs, then reports (as its trainer does on SIGTERM)
    that it stopped with step `step` checkpointed; returns attempt 0's RayJob name."""
    api.create_run(run_manifest(tiny, maxRestarts=0))
    first = wait_for(lambda: api.attempt("smoke", 0), what="attempt 0")["metadata"]["name"]
    api.kuberay_reports(first, jobDeploymentStatus="Running", jobStatus="RUNNING")
    api.wait_phase("smoke", "Running")
    reporter = ProgressReporter("smoke", api.ns, kubeconfig=str(kube_emulator.kubeconfig), attempt=0)
    reporter.preempted(step, f"preempted at step {step}: checkpoint step-{step} committed")
    reporter.close()
    return first


def test_a_preempted_attempt_restarts_at_once_and_keeps_the_budget(operator, api, tiny, kube_emulator):
    """The trainer reports that its attempt stopped with a checkpoint when told to (a drain, an
    eviction): the next attempt starts without backoff even with maxRestarts 0, and only a real
    failure after it spends the budget."""
    operator()
    first = _running_then_preempted(api, tiny, kube_emulator, step=5)
    wait_for(lambda: api.status("smoke").get("lastPreemption"), what="the trainer's report")
    api.kuberay_reports(first, jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed",
                        message="Job entrypoint command failed with exit code 75")
    rj1 = wait_for(lambda: api.attempt("smoke", 1), what="attempt 1")
    status = api.status("smoke")
    assert (status["restarts"], status["preemptions"], status["lastPreemption"]["step"]) == (1, 1, 5), status
    events = [e for e in api.objects("events").values() if e.get("reason") == "Preempted"]
    assert [e["type"] for e in events] == ["Normal"], events  # routine, not a warning
    assert status["phase"] in ("Restarting", "Initializing", "Pending")

    api.kuberay_reports(rj1["metadata"]["name"], jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed")
    api.wait_phase("smoke", "Failed")
    assert api.condition("smoke", "Failed")["reason"] == "RestartsExhausted"
    assert set(api.objects("rayjobs")) == {rj1["metadata"]["name"]}


def test_a_preempted_attempt_is_replaced_before_kuberay_fails_its_job(operator, api, tiny, kube_emulator):
    """After a drain KubeRay recreates the evicted pods and learns that the job ended only once they
    are back; the trainer's report that it stopped with a checkpoint is enough to start the next
    attempt, and the old RayJob goes."""
    operator()
    first = _running_then_preempted(api, tiny, kube_emulator, step=3)
    wait_for(lambda: api.attempt("smoke", 1), what="attempt 1, with attempt 0's RayJob still Running")
    wait_for(lambda: first not in api.objects("rayjobs"), what="attempt 0's RayJob deleted")
    status = api.status("smoke")
    assert (status["restarts"], status["preemptions"]) == (1, 1), status
    assert api.condition("smoke", "Failed")["status"] == "False"


def test_suspend_and_resume(operator, api, tiny):
    operator()
    api.create_run(run_manifest(tiny))
    rjn = wait_for(lambda: api.attempt("smoke"), what="the RayJob")["metadata"]["name"]
    api.kuberay_reports(rjn, jobDeploymentStatus="Running", jobStatus="RUNNING")
    api.wait_phase("smoke", "Running")

    api.patch_spec("smoke", {"suspend": True})
    wait_for(lambda: api.rayjob(rjn)["spec"].get("suspend") is True, what="RayJob suspend: true")
    api.kuberay_reports(rjn, jobDeploymentStatus="Suspended", jobStatus=None)
    api.wait_phase("smoke", "Suspended")
    assert api.condition("smoke", "Suspended")["status"] == "True"
    assert api.condition("smoke", "Ready")["status"] == "False"

    api.patch_spec("smoke", {"suspend": False})
    wait_for(lambda: api.rayjob(rjn)["spec"].get("suspend") is False, what="RayJob suspend: false")
    api.kuberay_reports(rjn, jobDeploymentStatus="Running", jobStatus="RUNNING")
    api.wait_phase("smoke", "Running")
    assert set(api.objects("rayjobs")) == {rjn}  # resumed in place, not a new attempt
    cm = api.objects("configmaps")["smoke-config"]
    assert '"suspend": false' in cm["data"]["spec.json"]


def test_immutable_change_is_refused_and_can_be_undone(operator, api, tiny):
    operator()
    api.create_run(run_manifest(tiny))
    before = wait_for(lambda: api.attempt("smoke"), what="the RayJob")
    api.wait_phase("smoke", "Initializing")

    api.patch_spec("smoke", {"model": {"source": "bundled:smollm2-135m-instruct"}})
    stalled = wait_for(lambda: (c := api.condition("smoke", "Stalled")).get("status") == "True" and c,
                       what="Stalled")
    assert stalled["reason"] == "ImmutableFieldChanged" and "spec.model.source" in stalled["message"]
    assert api.status("smoke")["phase"] == "Initializing"
    assert api.rayjob(before["metadata"]["name"])["spec"] == before["spec"]  # the RayJob is left alone
    assert "tiny-random" in api.objects("configmaps")["smoke-config"]["data"]["spec.json"]

    api.patch_spec("smoke", {"model": {"source": "bundled:tiny-random"}})
    wait_for(lambda: api.condition("smoke", "Stalled").get("status") == "False", what="Stalled cleared")


def test_invalid_spec_fails_once_without_a_rayjob(operator, api, tiny):
    op = operator()
    # Passes the CRD's OpenAPI schema (KMock runs no CEL either) but not the models.
    bad = run_manifest(tiny, sampler={"backend": "vllm", "replicas": 1, "gpusPerReplica": 3, "tensorParallelSize": 2})
    api.create_run(bad)
    status = api.wait_phase("smoke", "Failed")
    stalled = api.condition("smoke", "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "InvalidSpec"
    assert "spec.sampler" in stalled["message"] and "tensorParallelSize" in stalled["message"]
    # kopf recorded the creation as handled (no retry scheduled), and the handler ran once.
    meta = wait_for(lambda: (m := api.run("smoke")["metadata"]).get("annotations", {})
                    .get("empo.dev/last-handled-configuration") and m, what="creation marked handled")
    assert not [k for k in meta["annotations"] if k.startswith("empo.dev/reconcile_run")]
    assert handler_runs(op.metrics(), "reconcile_run") == 1
    assert api.objects("rayjobs") == {} and status["restarts"] == 0


def test_deletion_leaves_children_to_the_garbage_collector(operator, api, tiny):
    operator()
    run = api.create_run(run_manifest(tiny))
    wait_for(lambda: api.attempt("smoke"), what="the RayJob")
    assert not api.run("smoke")["metadata"].get("finalizers")  # nothing blocks deletion
    api.kube.delete("empo.dev/v1alpha1", "emporuns", api.ns, "smoke")
    wait_for(lambda: api.run("smoke") is None, what="the run to go")
    # The API server's garbage collector deletes every child that names the run as owner.
    for plural in ("configmaps", "serviceaccounts", "roles", "rolebindings", "rayjobs"):
        (obj,) = api.objects(plural).values()
        assert owned_by(obj, run) and obj["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True


def test_operator_restart_mid_run_creates_no_duplicate(operator, api, tiny):
    first = operator()
    api.create_run(run_manifest(tiny))
    rj = wait_for(lambda: api.attempt("smoke"), what="the RayJob")
    rjn = rj["metadata"]["name"]
    api.kuberay_reports(rjn, jobDeploymentStatus="Running", jobStatus="RUNNING")
    api.wait_phase("smoke", "Running")
    first.stop()

    second = operator()
    wait_for(lambda: handler_runs(second.metrics(), "reconcile_run") == 1,
             what="the resumed operator to reconcile the run")
    assert set(api.objects("rayjobs")) == {rjn}
    assert api.rayjob(rjn)["metadata"]["uid"] == rj["metadata"]["uid"]  # the same object, untouched
    assert api.status("smoke")["phase"] == "Running"
    api.kuberay_reports(rjn, jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    api.wait_phase("smoke", "Succeeded")
