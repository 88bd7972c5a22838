"""The operator recovers by itself (level-triggered) and keeps runs apart (identity), for real:
`python -m empo_operator` against the KMock emulator, the tests playing KubeRay, Kueue, the user
and the garbage collector."""

import copy
import datetime
import time

import pytest

from tests.integration.operator.test_operator_e2e import handler_runs
from tests.plugins.kmock_server import wait_for

pytestmark = pytest.mark.timeout(90)


def run_manifest(tiny, **spec):
    doc = copy.deepcopy(tiny)
    doc["metadata"]["name"] = "smoke"
    doc["spec"].update(spec)
    return doc


def owner_uid(obj):
    return obj["metadata"]["ownerReferences"][0]["uid"]


def test_a_rayjob_deleted_under_the_operator_is_recreated(operator, api, tiny):
    operator()
    api.create_run(run_manifest(tiny))
    old = wait_for(lambda: api.attempt("smoke"), what="the RayJob")
    api.kube.delete("ray.io/v1", "rayjobs", api.ns, old["metadata"]["name"])
    new = wait_for(lambda: (rj := api.attempt("smoke")) and rj["metadata"]["uid"] != old["metadata"]["uid"] and rj,
                   what="the RayJob recreated")
    assert new["spec"] == old["spec"] and api.status("smoke")["restarts"] == 0


def test_api_errors_are_retried(operator, api, tiny, kube_emulator):
    """A 503 on the RayJob's creation and on a status write is retried, not dropped."""
    operator()
    kube_emulator.fail("CREATE", "rayjobs", 503, 2)
    kube_emulator.fail("UPDATE", "emporuns", 503, 2)
    api.create_run(run_manifest(tiny))
    rj = wait_for(lambda: api.attempt("smoke"), timeout=10, what="the RayJob despite two 503s")
    api.kuberay_reports(rj["metadata"]["name"], jobDeploymentStatus="Running", jobStatus="RUNNING")
    api.wait_phase("smoke", "Running", timeout=10)


def test_backoff_is_kept_across_an_operator_restart(operator, api, tiny):
    first = operator(EMPO_RESTART_BACKOFF_SECONDS="6")
    api.create_run(run_manifest(tiny))
    rj0 = wait_for(lambda: api.attempt("smoke", 0), what="attempt 0")["metadata"]["name"]
    api.kuberay_reports(rj0, jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed")
    status = wait_for(lambda: (s := api.status("smoke")).get("nextAttemptTime") and s, what="the backoff in status")
    assert status["phase"] == "Restarting" and status["restarts"] == 1
    due = datetime.datetime.fromisoformat(status["nextAttemptTime"].replace("Z", "+00:00")).timestamp()
    first.stop()

    operator(EMPO_RESTART_BACKOFF_SECONDS="6")  # resumes the run mid-backoff
    while time.time() < due - 1.5:
        assert api.attempt("smoke", 1) is None, "the restarted operator skipped the backoff"
        time.sleep(0.2)
    wait_for(lambda: api.attempt("smoke", 1), timeout=15, what="attempt 1 after the backoff")
    assert "nextAttemptTime" not in wait_for(lambda: (s := api.status("smoke")).get("phase") == "Initializing" and s,
                                             what="attempt 1 observed")


def test_a_run_applied_again_under_its_name_gets_its_own_children(operator, api, tiny):
    op = operator()
    first = api.create_run(run_manifest(tiny))
    old_rj = wait_for(lambda: api.attempt("smoke"), what="the first run's RayJob")
    api.kube.delete("empo.dev/v1alpha1", "emporuns", api.ns, "smoke")
    wait_for(lambda: api.run("smoke") is None, what="the first run to go")
    # KMock has no garbage collector: the old children stay, as they do on a cluster while
    # KubeRay's finalizer holds the RayJob.
    second = api.create_run(run_manifest(tiny))
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    # It waits for the collector to remove the predecessor's children, adopting none of them.
    wait_for(lambda: handler_runs(op.metrics(), "reconcile_run") >= 2, what="the second run reconciled")
    assert set(api.objects("rayjobs")) == {old_rj["metadata"]["name"]}
    from empo_operator.kube import PLURALS
    for (api_version, kind), plural in PLURALS.items():  # every kind the operator creates
        if kind in ("EmpoRun", "Event"):
            continue
        for name, obj in api.objects(plural).items():
            if owner_uid(obj) == first["metadata"]["uid"]:
                api.kube.delete(api_version, plural, api.ns, name)
    new_rj = wait_for(lambda: api.attempt("smoke"), timeout=15, what="the second run's own RayJob")
    assert new_rj["metadata"]["name"] != old_rj["metadata"]["name"]
    assert owner_uid(new_rj) == second["metadata"]["uid"]
    cm = api.objects("configmaps")["smoke-config"]
    assert owner_uid(cm) == second["metadata"]["uid"]
    assert all(owner_uid(o) == second["metadata"]["uid"] for p in ("serviceaccounts", "roles", "rolebindings")
               for o in api.objects(p).values())
    assert api.status("smoke")["rayJobName"] == new_rj["metadata"]["name"]


def test_kueue_keeps_control_of_suspend_and_the_queue_label_follows(operator, api, tiny):
    operator()
    api.create_run(run_manifest(tiny, queueName="team-a"))
    rj = wait_for(lambda: api.attempt("smoke"), what="the RayJob")
    name = rj["metadata"]["name"]
    assert rj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    # Kueue holds the job: suspended until admitted.
    api.kube.patch("ray.io/v1", "rayjobs", api.ns, name, {"spec": {"suspend": True}})
    api.kuberay_reports(name, jobDeploymentStatus="Suspended")
    api.wait_phase("smoke", "Pending")
    api.patch_spec("smoke", {"queueName": "team-b", "eval": {"every": 5}})
    wait_for(lambda: api.rayjob(name)["metadata"]["labels"].get("kueue.x-k8s.io/queue-name") == "team-b",
             what="the queue label to follow queueName")
    time.sleep(2)  # two resyncs: nothing may lift Kueue's suspend (no condition to await: nothing happens)
    assert api.rayjob(name)["spec"]["suspend"] is True
    assert api.condition("smoke", "Reconciling")["reason"] == "Queued"

    # Admitted: Kueue lifted the suspend. Its webhook refuses to relabel a running RayJob, so a new
    # queue waits for the next suspend, and the run's status goes on following it meanwhile.
    api.kube.patch("ray.io/v1", "rayjobs", api.ns, name, {"spec": {"suspend": False}})
    api.kuberay_reports(name, jobDeploymentStatus="Running", jobStatus="RUNNING")
    api.wait_phase("smoke", "Running")
    api.patch_spec("smoke", {"queueName": "team-c"})
    generation = api.run("smoke")["metadata"]["generation"]
    wait_for(lambda: api.status("smoke").get("observedGeneration") == generation, what="the change observed")
    assert api.rayjob(name)["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-b"
    api.patch_spec("smoke", {"suspend": True})
    wait_for(lambda: (rj := api.rayjob(name))["spec"]["suspend"] is True
             and rj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-c", what="moved as it suspends")


def test_an_operator_upgrade_leaves_live_runs_editable(operator, api, tiny):
    first = operator(EMPO_TRAINER_IMAGE="registry.example/empo-trainer:1")
    api.create_run(run_manifest(tiny))
    rj = wait_for(lambda: api.attempt("smoke"), what="the RayJob")
    api.kuberay_reports(rj["metadata"]["name"], jobDeploymentStatus="Running", jobStatus="RUNNING")
    api.wait_phase("smoke", "Running")
    first.stop()

    operator(EMPO_TRAINER_IMAGE="registry.example/empo-trainer:2")  # helm upgrade
    api.patch_spec("smoke", {"suspend": True})
    wait_for(lambda: api.rayjob(rj["metadata"]["name"])["spec"].get("suspend") is True, what="the suspend applied")
    assert api.condition("smoke", "Stalled").get("status") == "False"
    assert '"image": "registry.example/empo-trainer:1"' in api.objects("configmaps")["smoke-config"]["data"]["spec.json"]


def test_a_run_that_never_gets_resources_fails_with_a_reason(operator, api, tiny):
    operator()
    api.create_run(run_manifest(tiny, preRunningDeadlineSeconds=2))
    rj = wait_for(lambda: api.attempt("smoke"), what="the RayJob")
    api.kuberay_reports(rj["metadata"]["name"], jobDeploymentStatus="Initializing")  # pods stay Pending
    status = api.wait_phase("smoke", "Failed", timeout=15)
    failed = api.condition("smoke", "Failed")
    assert failed["reason"] == "PreRunningDeadlineExceeded" and "preRunningDeadlineSeconds" in failed["message"]
    assert status["restarts"] == 0
    wait_for(lambda: api.rayjob(rj["metadata"]["name"]) is None, what="the waiting cluster released")


def test_a_missing_operator_default_makes_runs_wait_not_fail(operator, api, tiny):
    first = operator(EMPO_DEFAULT_STORAGE_URI="")  # a platform team forgot storage.defaultUri
    manifest = run_manifest(tiny)
    del manifest["spec"]["storage"]["uri"]
    api.create_run(manifest)
    stalled = wait_for(lambda: (c := api.condition("smoke", "Stalled")).get("status") == "True" and c,
                       what="Stalled")
    assert stalled["reason"] == "OperatorDefaults" and "storage.defaultUri" in stalled["message"]
    assert api.status("smoke")["phase"] == "Pending" and api.objects("rayjobs") == {}
    first.stop()

    operator()  # fixed: the run starts, with the operator's default storage
    wait_for(lambda: api.attempt("smoke"), timeout=15, what="the RayJob once the default exists")
    assert '"uri": "s3://empo-runs/default"' in api.objects("configmaps")["smoke-config"]["data"]["spec.json"]
    wait_for(lambda: api.condition("smoke", "Stalled").get("status") == "False", what="Stalled cleared")


def test_an_upgraded_operator_keeps_a_live_attempt_named_the_old_way(operator, api, tiny):
    """Earlier operators named attempt 0 `<run>`: after the upgrade it must not get a second cluster."""
    from empo_api.models import EmpoRun
    from empo_operator.children import build_children
    from empo_operator.defaults import defaulted
    from empo_operator.settings import Settings

    run = api.create_run(run_manifest(tiny))  # no operator yet: we lay out what the old one left
    model = EmpoRun.model_validate({**run_manifest(tiny), "metadata": {"name": "smoke", "namespace": api.ns}})
    old = Settings(trainer_image="registry.example/empo-trainer:test", default_storage_uri="s3://empo-runs/default")
    children = build_children(defaulted(model, old), old)
    children[-1]["metadata"]["name"] = "smoke"
    owner = {"apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun", "name": "smoke", "uid": run["metadata"]["uid"],
             "controller": True, "blockOwnerDeletion": True}
    for child in children:
        child["metadata"]["ownerReferences"] = [owner]
        api.kube.create(child)
    api.kuberay_reports("smoke", jobDeploymentStatus="Running", jobStatus="RUNNING")
    api.kube.patch("empo.dev/v1alpha1", "emporuns", api.ns, "smoke",
                   {"status": {"phase": "Running", "restarts": 0, "rayJobName": "smoke"}}, "status")

    op = operator()
    wait_for(lambda: handler_runs(op.metrics(), "reconcile_run") == 1, what="the run resumed")
    wait_for(lambda: api.status("smoke").get("jobStatus") == "RUNNING", what="the old RayJob mirrored")
    assert set(api.objects("rayjobs")) == {"smoke"}
    api.kuberay_reports("smoke", jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    api.wait_phase("smoke", "Succeeded")
