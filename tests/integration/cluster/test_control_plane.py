"""The control plane itself: what the cluster tests rely on really happens."""

import json
from pathlib import Path

import yaml

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[3]


def test_the_api_server_is_the_pinned_release(control_plane):
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.37.")


def test_rbac_refuses_an_account_without_grants(control_plane, cluster_namespace, tmp_path):
    control_plane.kubectl("create", "serviceaccount", "nobody", "-n", cluster_namespace)
    kubeconfig = control_plane.service_account_kubeconfig(cluster_namespace, "nobody", tmp_path / "kc")
    denied = control_plane.kubectl("get", "configmaps", "-n", cluster_namespace, kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    # The token authenticates (401 would say "Unauthorized"): RBAC, not authentication, refused it.
    assert "system:serviceaccount:" + cluster_namespace + ":nobody" in denied.stderr


def test_garbage_collector_deletes_dependents(control_plane, cluster_namespace):
    owner = control_plane.kubectl("create", "configmap", "owner", "-n", cluster_namespace, "-o", "json")
    uid = json.loads(owner.stdout)["metadata"]["uid"]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "child", "namespace": cluster_namespace,
                     "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]},
    }))
    control_plane.kubectl("delete", "configmap", "owner", "-n", cluster_namespace)
    wait_for(lambda: control_plane.get("configmap", "child", cluster_namespace) is None, timeout=60,
             what="the garbage collector to delete the child")


def test_kuberay_turns_a_rayjob_into_a_raycluster(control_plane, cluster_namespace):
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"name": "smoke", "namespace": cluster_namespace},
        "spec": {
            "entrypoint": "python -c 'print(1)'",
            "rayClusterSpec": {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
                {"name": "ray-head", "image": "rayproject/ray:2.40.0"}]}}}},
        },
    }))
    status = wait_for(lambda: (control_plane.get("rayjob", "smoke", cluster_namespace) or {}).get("status", {})
                      .get("rayClusterName"), timeout=90, what="KubeRay to name the RayJob's cluster")
    cluster = wait_for(lambda: control_plane.get("raycluster", status, cluster_namespace), timeout=60,
                       what="the RayCluster")
    assert cluster["metadata"]["ownerReferences"][0]["kind"] == "RayJob"


def test_the_kuberay_crds_of_the_unit_tests_are_those_of_the_kuberay_that_runs(control_plane):
    data = sorted((REPO / "tests" / "data" / "kuberay").glob("ray.io_*.yaml"))
    assert [p.name for p in data] == ["ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml"]
    for path in data:
        assert path.read_bytes() == (control_plane.kuberay_crds / path.name).read_bytes(), path.name
    # The release with Ray token authentication: the API server keeps authOptions.
    stored = json.loads(control_plane.kubectl("get", "crd", "rayjobs.ray.io", "-o", "json").stdout)
    assert "authOptions" in json.dumps(stored["spec"]["versions"])
