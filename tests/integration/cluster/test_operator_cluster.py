"""The operator on a real control plane: kube-apiserver (RBAC, CEL, defaulting, resourceVersion),
the garbage collector and the KubeRay operator (tests/plugins/control_plane.py).

The operator runs as `python -m empo_operator` with the env, ServiceAccount and RBAC of the chart's
release (tests/integration/cluster/conftest.py). No node runs pods: KubeRay's clusters stay Pending, so the tests write a
RayJob's status themselves where an attempt must run, fail or end.
"""

from __future__ import annotations

import copy
import json

import pytest

from empo_api.models import EmpoRun
from empo_operator import builders
from empo_operator import builders
from empo_operator.defaults import defaulted
from empo_operator.rayjob import build_rayjob
from empo_operator.settings import Settings
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MINIMAL = {"apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun", "metadata": {"name": "m"},
           "spec": {"model": {"source": "Qwen/Qwen2.5-Math-1.5B"}, "dataset": {"uri": "s3://data/math.jsonl"}}}
DEFAULT_STORAGE = "s3://empo-runs/cluster"


def apply(cp, namespace: str, manifest: dict) -> dict:
    doc = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
    cp.kubectl("apply", "-f", "-", input=json.dumps(doc))
    return cp.get("emporun", doc["metadata"]["name"], namespace)


OPERATOR_ENV = {"EMPO_DEFAULT_STORAGE_URI": DEFAULT_STORAGE, "EMPO_RESTART_BACKOFF_SECONDS": "1",
                "EMPO_RESYNC_SECONDS": "2"}


def test_the_servers_defaults_build_the_same_rayjob(control_plane, cluster_namespace, empo_release):
    stored = apply(control_plane, cluster_namespace, MINIMAL)
    assert stored["spec"]["ray"]["worker"] == {"cpu": "8", "memory": "64Gi"}
    assert "uri" not in stored["spec"]["storage"]  # the operator's default storage applies
    written = {**MINIMAL, "metadata": {**stored["metadata"]}}
    settings = Settings(trainer_image="registry.example/empo-trainer:1", default_storage_uri=DEFAULT_STORAGE)
    manifest = {k: stored[k] for k in ("apiVersion", "kind", "spec")} | {"metadata": written["metadata"]}
    assert build_rayjob(defaulted(EmpoRun.model_validate(manifest), settings), settings) == \
        build_rayjob(defaulted(EmpoRun.model_validate(written), settings), settings)


def test_an_immutable_change_is_refused_by_the_server(control_plane, cluster_namespace, empo_release):
    apply(control_plane, cluster_namespace, MINIMAL)
    proc = control_plane.kubectl("patch", "emporun", "m", "-n", cluster_namespace, "--type=merge",
                                 "-p", json.dumps({"spec": {"model": {"source": "other/model"}}}), check=False)
    assert proc.returncode != 0 and "spec.model is immutable" in proc.stderr
    control_plane.kubectl("patch", "emporun", "m", "-n", cluster_namespace, "--type=merge",
                          "-p", json.dumps({"spec": {"suspend": True}}))


def test_a_run_through_its_life_on_a_real_cluster(control_plane, cluster_namespace, empo_release, chart_operator):
    cp, ns = control_plane, cluster_namespace
    op = chart_operator(empo_release, **OPERATOR_ENV)
    manifest = copy.deepcopy(MINIMAL)
    manifest["metadata"]["name"] = "life"
    manifest["spec"]["maxRestarts"] = 2
    run = apply(cp, ns, manifest)
    uid = run["metadata"]["uid"]

    def status() -> dict:
        return (cp.get("emporun", "life", ns) or {}).get("status") or {}

    def rayjob(attempt: int) -> dict | None:
        return cp.get("rayjob", builders.rayjob_name("life", uid, attempt), ns)

    # Children created under real RBAC (the RoleBinding only once its Role exists), owned by the run.
    rj0 = wait_for(lambda: rayjob(0), timeout=60, what=f"attempt 0 (operator log: {op.log_path})")
    for kind, name in (("configmap", "life-config"), ("serviceaccount", "life-trainer"), ("role", "life-trainer"),
                       ("rolebinding", "life-trainer")):
        obj = cp.get(kind, name, ns)
        assert obj["metadata"]["ownerReferences"][0]["uid"] == uid, kind
    # KubeRay takes it from there: a RayCluster whose pods no node runs.
    wait_for(lambda: status().get("phase") == "Initializing", timeout=60, what="phase Initializing")
    wait_for(lambda: cp.kubectl("get", "rayclusters", "-n", ns, "-o", "name").stdout.strip(), timeout=60,
             what="KubeRay's RayCluster")
    # KubeRay builds the head Service from the head's declared ports: without the dashboard port it
    # never creates the submitter and the run stays Initializing (found on a real node).
    head_ports = wait_for(lambda: {p["name"]: p["port"] for svc in json.loads(cp.kubectl(
        "get", "services", "-n", ns, "-l", "ray.io/node-type=head", "-o", "json").stdout)["items"]
        for p in svc["spec"]["ports"]}, timeout=60, what="KubeRay's head Service")
    assert head_ports["dashboard"] == 8265 and head_ports["gcs-server"] == 6379 and head_ports["client"] == 10001

    # Suspend and resume through KubeRay.
    cp.kubectl("patch", "emporun", "life", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_for(lambda: status().get("phase") == "Suspended", timeout=90, what="phase Suspended")
    cp.kubectl("patch", "emporun", "life", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_for(lambda: status().get("phase") in ("Initializing", "Pending"), timeout=90, what="resumed")

    # A failed attempt is replaced after the backoff; the operator restarting meanwhile changes nothing.
    cp.kubectl("patch", "rayjob", rj0["metadata"]["name"], "-n", ns, "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED",
                                            "reason": "AppFailed", "message": "driver exited with 1"}}))
    op.stop()
    op.start()
    wait_for(lambda: rayjob(1), timeout=90, what="attempt 1")
    wait_for(lambda: rayjob(0) is None, timeout=90, what="attempt 0 deleted")
    assert status()["restarts"] == 1
    rayjobs = cp.kubectl("get", "rayjobs", "-n", ns, "-o", "name").stdout.split()
    assert rayjobs == [f"rayjob.ray.io/{builders.rayjob_name('life', uid, 1)}"]  # no duplicate

    # Deleted and applied again under the same name: its own children, none of its predecessor's.
    cp.kubectl("delete", "emporun", "life", "-n", ns, "--wait=false")
    wait_for(lambda: cp.get("emporun", "life", ns) is None, timeout=60, what="the run deleted")
    again = apply(cp, ns, manifest)
    new_uid = again["metadata"]["uid"]
    new_rj = wait_for(lambda: cp.get("rayjob", builders.rayjob_name("life", new_uid, 0), ns), timeout=120,
                      what="the new run's RayJob")
    assert new_rj["metadata"]["ownerReferences"][0]["uid"] == new_uid
    wait_for(lambda: cp.get("rayjob", builders.rayjob_name("life", uid, 1), ns) is None, timeout=120,
             what="the garbage collector to remove the old run's RayJob")
    cm = wait_for(lambda: (c := cp.get("configmap", "life-config", ns)) and
                  c["metadata"]["ownerReferences"][0]["uid"] == new_uid and c, timeout=60, what="the new ConfigMap")
    assert cm
