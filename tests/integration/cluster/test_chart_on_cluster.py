"""charts/empo-operator installed by the real helm, and the operator running as the chart's
ServiceAccount: every call it makes passes the chart's RBAC on a real API server."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from empo_api.models import EmpoRun
from empo_operator import builders
from tests.integration.cluster.conftest import CHART, REPO, helm_install
from tests.waiting import wait_for

RUN_LABEL = "empo.dev/run"


def tiny_run(name: str, namespace: str, **spec_overrides) -> dict:
    doc = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    # On a cluster the operator refuses a local path (the pod's own disk).
    doc["spec"]["storage"]["uri"] = "s3://empo-runs/tests"
    doc["spec"].update(spec_overrides)
    return doc


def apply(cp, doc: dict) -> None:
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def children(cp, resource: str, namespace: str, run: str) -> list[dict]:
    out = cp.kubectl("get", resource, "-n", namespace, "-l", f"{RUN_LABEL}={run}", "-o", "json").stdout
    return json.loads(out)["items"]


def rbac_denials(log: str) -> list[str]:
    """Refusals by RBAC in an operator's log (a terminating namespace's 403 is no RBAC matter)."""
    return [line for line in log.splitlines() if 'forbidden: User \\"system:serviceaccount:' in line
            or 'forbidden: User "system:serviceaccount:' in line]


def can_i(cp, kubeconfig, *args: str) -> bool:
    proc = cp.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    assert proc.stdout.strip() in ("yes", "no"), proc.stderr
    return proc.stdout.strip() == "yes"


def test_helm_lint_passes(control_plane):
    control_plane.helm("lint", "--strict", CHART)
    control_plane.helm("lint", "--strict", CHART, "--set", "watchNamespaces={a,b}")


def test_cluster_wide_account_holds_the_run_rules_and_nothing_more(control_plane, empo_release, tmp_path):
    kc = control_plane.service_account_kubeconfig(empo_release.namespace, empo_release.service_account, tmp_path / "kc")
    granted = [
        ("list", "emporuns.empo.dev", "--all-namespaces"),
        ("patch", "emporuns.empo.dev/status", "-n", "anywhere"),
        ("create", "rayjobs.ray.io", "-n", "anywhere"),
        ("delete", "rayjobs.ray.io", "-n", "anywhere"),
        ("create", "configmaps", "-n", "anywhere"),
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", "anywhere"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ]
    refused = [
        ("get", "secrets", "-n", "anywhere"),
        ("list", "secrets", "--all-namespaces"),
        ("create", "pods", "-n", "anywhere"),
        ("delete", "emporuns.empo.dev", "-n", "anywhere"),
        ("update", "emporuns.empo.dev", "-n", "anywhere"),
        ("delete", "configmaps", "-n", "anywhere"),
        ("bind", "roles.rbac.authorization.k8s.io", "-n", "anywhere"),
        ("escalate", "roles.rbac.authorization.k8s.io", "-n", "anywhere"),
        ("create", "rayclusters.ray.io", "-n", "anywhere"),
    ]
    assert [a for a in granted if not can_i(control_plane, kc, *a)] == []
    assert [a for a in refused if can_i(control_plane, kc, *a)] == []


def test_namespaced_account_reaches_only_its_namespace(control_plane, namespaced_release, tmp_path):
    kc = control_plane.service_account_kubeconfig(namespaced_release.namespace, namespaced_release.service_account,
                                                  tmp_path / "kc")
    (watched,) = namespaced_release.watched
    assert can_i(control_plane, kc, "watch", "emporuns.empo.dev", "-n", watched)
    assert can_i(control_plane, kc, "create", "rayjobs.ray.io", "-n", watched)
    assert not can_i(control_plane, kc, "watch", "emporuns.empo.dev", "-n", "default")
    assert not can_i(control_plane, kc, "list", "emporuns.empo.dev", "--all-namespaces")
    assert not can_i(control_plane, kc, "get", "secrets", "-n", watched)


def test_operator_as_chart_account_creates_a_run_kuberay_plans_and_gc_removes(
        control_plane, empo_release, chart_operator, cluster_namespace):
    op = chart_operator(empo_release)
    apply(control_plane, tiny_run("smoke", cluster_namespace))
    rayjob = wait_for(lambda: (c := children(control_plane, "rayjobs", cluster_namespace, "smoke")) and c[0],
                      timeout=60, what=f"the operator's RayJob (log: {op.log_path})")
    # The real KubeRay turns it into a RayCluster with the worker groups the operator planned.
    cluster_name = wait_for(lambda: (control_plane.get("rayjob", rayjob["metadata"]["name"], cluster_namespace)
                                     .get("status") or {}).get("rayClusterName"),
                            timeout=90, what="KubeRay to create the RayJob's cluster")
    cluster = wait_for(lambda: control_plane.get("raycluster", cluster_name, cluster_namespace), timeout=60,
                       what="the RayCluster")
    planned = rayjob["spec"]["rayClusterSpec"]
    made = cluster["spec"]
    # Ray token auth survives the pinned KubeRay's CRDs, and KubeRay generates the run's token.
    assert planned["authOptions"] == made["authOptions"] == {"mode": "token"}
    token = wait_for(lambda: (control_plane.get("secret", cluster_name, cluster_namespace) or {}).get("data"),
                     timeout=60, what="KubeRay to create the cluster's auth token Secret")
    assert len(token["auth_token"]) > 20
    assert [(g["groupName"], g["replicas"]) for g in made.get("workerGroupSpecs") or []] == \
        [(g["groupName"], g["replicas"]) for g in planned.get("workerGroupSpecs") or []]
    for got, want in zip(made.get("workerGroupSpecs") or [], planned.get("workerGroupSpecs") or []):
        assert got["template"]["spec"]["containers"][0]["resources"] == \
            want["template"]["spec"]["containers"][0]["resources"], got["groupName"]
    assert rbac_denials(op.log()) == []

    control_plane.kubectl("delete", "emporun", "smoke", "-n", cluster_namespace, "--wait=true", "--timeout=60s")
    for resource in ("rayjobs", "configmaps", "serviceaccounts", "roles", "rolebindings"):
        wait_for(lambda: not children(control_plane, resource, cluster_namespace, "smoke"), timeout=90,
                 what=f"the garbage collector to remove the run's {resource}")
    wait_for(lambda: control_plane.get("raycluster", cluster_name, cluster_namespace) is None, timeout=90,
             what="the RayCluster to go with its RayJob")


def test_namespaced_operator_handles_only_its_namespace(control_plane, namespaced_release, chart_operator,
                                                        cluster_namespace):
    (watched,) = namespaced_release.watched
    op = chart_operator(namespaced_release)
    apply(control_plane, tiny_run("elsewhere", cluster_namespace))
    apply(control_plane, tiny_run("mine", watched))
    wait_for(lambda: children(control_plane, "rayjobs", watched, "mine"), timeout=20, what="the watched run's RayJob")
    assert children(control_plane, "rayjobs", cluster_namespace, "elsewhere") == []
    assert not (control_plane.get("emporun", "elsewhere", cluster_namespace)["metadata"].get("finalizers"))
    control_plane.kubectl("delete", "emporun", "mine", "-n", watched, "--timeout=60s")
    assert rbac_denials(op.log()) == []


def test_helm_upgrade_with_a_live_run(control_plane, empo_release, chart_operator, cluster_namespace):
    op = chart_operator(empo_release)
    apply(control_plane, tiny_run("live", cluster_namespace))
    wait_for(lambda: children(control_plane, "rayjobs", cluster_namespace, "live"), timeout=60, what="the RayJob")
    image = "registry.example/empo-trainer:upgraded"
    upgrade = ("upgrade", empo_release.name, CHART, "-n", empo_release.namespace, "--reuse-values")
    control_plane.helm(*upgrade, "--set", f"trainer.image={image}")
    try:
        op.stop()
        # The upgraded Deployment's env, the same ServiceAccount (the upgrade kept the RBAC in place).
        upgraded = chart_operator(empo_release)
        assert upgraded.env["EMPO_TRAINER_IMAGE"] == image
        apply(control_plane, tiny_run("after", cluster_namespace))
        rayjob = wait_for(lambda: (c := children(control_plane, "rayjobs", cluster_namespace, "after")) and c[0],
                          timeout=60, what="the new run's RayJob")
        head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert head["image"] == image
        # The live run kept its single RayJob across the operator restart.
        assert len(children(control_plane, "rayjobs", cluster_namespace, "live")) == 1
        assert rbac_denials(upgraded.log()) == []
    finally:
        control_plane.helm("rollback", empo_release.name, "-n", empo_release.namespace)


# What every authenticated identity may do (the API server's discovery, self-review and public
# certificate roles).
EVERYONE = ("selfsubjectreviews.authentication.k8s.io", "selfsubjectaccessreviews.authorization.k8s.io",
            "selfsubjectrulesreviews.authorization.k8s.io", "clustertrustbundles.certificates.k8s.io")
CAN_I_ROW = re.compile(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


def can_i_list(cp, kubeconfig, namespace: str) -> set[tuple[str, str, str]]:
    """`kubectl auth can-i --list -n namespace` as (resource, resource names, verbs), the rules every
    identity has left out."""
    out = cp.kubectl("auth", "can-i", "--list", "-n", namespace, kubeconfig=kubeconfig).stdout
    rows = set()
    for line in out.splitlines()[1:]:
        m = CAN_I_ROW.match(line)
        assert m, line
        resource, urls, names, verbs = m.groups()
        if urls or resource in EVERYONE:
            continue
        rows.add((resource, " ".join(sorted(names.split())), " ".join(sorted(verbs.split()))))
    return rows


def documented(table: str) -> set[tuple[str, str, str]]:
    """The rows of a `<!-- can-i: table -->` table in docs/security.md."""
    text = (REPO / "docs" / "security.md").read_text()
    block = text.split(f"<!-- can-i: {table} -->", 1)[1].split("<!-- /can-i -->", 1)[0]
    rows = set()
    for line in block.strip().splitlines()[2:]:
        resource, names, verbs = (c.strip().strip("`") for c in line.strip().strip("|").split("|"))
        rows.add((resource, " ".join(sorted(names.split())), " ".join(sorted(verbs.split()))))
    return rows


def test_what_each_identity_can_do_is_what_security_md_lists(control_plane, empo_release, namespaced_release,
                                                              cluster_namespace, tmp_path):
    cp = control_plane
    cluster_wide = cp.service_account_kubeconfig(empo_release.namespace, empo_release.service_account,
                                                 tmp_path / "cw")
    namespaced = cp.service_account_kubeconfig(namespaced_release.namespace, namespaced_release.service_account,
                                               tmp_path / "ns")
    (watched,) = namespaced_release.watched
    assert can_i_list(cp, cluster_wide, cluster_namespace) == documented("operator") | documented("operator-cluster")
    # kube-system too: RBAC has no "everywhere but"; security.md says what that means.
    assert can_i_list(cp, cluster_wide, "kube-system") == documented("operator") | documented("operator-cluster")
    assert can_i_list(cp, namespaced, watched) == documented("operator") | documented("operator-cluster")
    assert can_i_list(cp, namespaced, cluster_namespace) == documented("operator-cluster")
    # A run's trainer identity, as the operator creates it (builders.build_trainer_rbac).
    run = EmpoRun.model_validate({**tiny_run("r", cluster_namespace)})
    for obj in builders.build_trainer_rbac(run):
        cp.kubectl("apply", "-f", "-", input=json.dumps(obj))
    trainer = cp.service_account_kubeconfig(cluster_namespace, builders.trainer_name("r"), tmp_path / "tr")
    rows = can_i_list(cp, trainer, cluster_namespace)
    assert rows == {(r, n.replace("<run>", "r"), v) for r, n, v in documented("trainer")}
    assert can_i_list(cp, trainer, "default") == set()


def test_a_release_of_the_same_name_installs_beside_another_in_its_own_namespace(control_plane, empo_release,
                                                                                  tmp_path):
    """The install guide's single-namespace command run by a second team: release "empo" again,
    in another namespace, watching its own namespace (the CRD stays the first release's)."""
    cp = control_plane
    team = cp.create_namespace("team-b")
    second = helm_install(cp, empo_release.name, team, "--set", "crds.install=false",
                          "--set", f"watchNamespaces={{{team}}}")
    try:
        names = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(
            cp.helm("get", "manifest", second.name, "-n", team).stdout) if d}
        first = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(
            cp.helm("get", "manifest", empo_release.name, "-n", empo_release.namespace).stdout) if d}
        cluster_scoped = {n for n in names if n[0] in ("ClusterRole", "ClusterRoleBinding")}
        assert cluster_scoped and not cluster_scoped & first, (cluster_scoped, first)
        kc = cp.service_account_kubeconfig(team, second.service_account, tmp_path / "kc")
        assert can_i(cp, kc, "create", "rayjobs.ray.io", "-n", team)
        assert not can_i(cp, kc, "create", "rayjobs.ray.io", "-n", "default")
    finally:
        cp.helm("uninstall", second.name, "-n", team, "--wait")
    # Uninstalling the second took nothing of the first.
    kc = cp.service_account_kubeconfig(empo_release.namespace, empo_release.service_account, tmp_path / "first")
    assert can_i(cp, kc, "create", "rayjobs.ray.io", "-n", "default")
    assert cp.get("crd", "emporuns.empo.dev") is not None
