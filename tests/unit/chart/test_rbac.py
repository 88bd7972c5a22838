"""The operator's RBAC holds exactly the verbs it uses, in both install modes.

The table below is the contract: every (API group, resource) the operator or kopf touches and the
verbs it calls on them. A verb added to the chart without a reason here fails, and so does one the
operator starts using without the chart granting it (the cross-checks against the operator code).
"""

import pytest

from empo_api.models import parse_run
from empo_operator import builders, kube

from .conftest import NAMESPACED, by_kind, render_docs

# Rules granted wherever the operator handles EmpoRuns (ClusterRole cluster-wide, Role per
# watched namespace otherwise).
RUN_RULES = {
    # kopf: list+watch to see runs, patch for its finalizer and annotations; get: re-read a run
    # when its RayJob changes.
    ("empo.dev", "emporuns"): {"get", "list", "watch", "patch"},
    # status writes; get+patch are also what the trainer Role grants (RBAC escalation rule).
    ("empo.dev", "emporuns/status"): {"get", "patch"},
    # owner references with blockOwnerDeletion (OwnerReferencesPermissionEnforcement).
    ("empo.dev", "emporuns/finalizers"): {"update"},
    ("", "configmaps"): {"create", "get", "patch"},
    ("", "serviceaccounts"): {"create", "get"},
    ("rbac.authorization.k8s.io", "roles"): {"create", "get"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"create", "get"},
    ("networking.k8s.io", "networkpolicies"): {"create", "get"},
    ("ray.io", "rayjobs"): {"create", "get", "list", "watch", "patch", "delete"},
    # Events on the EmpoRun; and a RayCluster's Warning events read (list) while its head pod does
    # not exist: KubeRay reports a refused pod creation only there.
    ("", "events"): {"create", "list"},
    # the run's pods, watched (kopf) for what keeps them from running (pod_causes).
    ("", "pods"): {"list", "watch"},
    # a queued run's LocalQueue, read while it waits (a missing one admits nothing).
    ("kueue.x-k8s.io", "localqueues"): {"get"},
}
# Cluster-scoped in both modes: kopf's CRD discovery.
CLUSTER_RULES = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}
PEERING_VERBS = {"get", "list", "watch", "patch"}

FORBIDDEN_VERBS = {"*", "bind", "escalate", "impersonate", "deletecollection"}


def _grants(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def _cluster_grants(docs) -> dict:
    (role,) = by_kind(docs, "ClusterRole")
    return _grants(role["rules"])


@pytest.mark.parametrize(
    "values, expected",
    [
        ({}, {**CLUSTER_RULES, **RUN_RULES}),
        ({"peering": {"name": "empo"}},
         {**CLUSTER_RULES, **RUN_RULES, ("kopf.dev", "clusterkopfpeerings"): PEERING_VERBS}),
        (NAMESPACED, CLUSTER_RULES),
        ({**NAMESPACED, "peering": {"name": "empo"}}, CLUSTER_RULES),
    ],
    ids=["cluster-wide", "cluster-wide-peering", "namespaced", "namespaced-peering"],
)
def test_cluster_role_holds_exactly_the_verbs_used(chart, values, expected):
    assert _cluster_grants(render_docs(chart, values)) == expected


@pytest.mark.parametrize(
    "values, expected",
    [
        (NAMESPACED, RUN_RULES),
        ({**NAMESPACED, "peering": {"name": "empo"}}, {**RUN_RULES, ("kopf.dev", "kopfpeerings"): PEERING_VERBS}),
    ],
    ids=["namespaced", "namespaced-peering"],
)
def test_each_watched_namespace_role_holds_exactly_the_verbs_used(chart, values, expected):
    roles = by_kind(render_docs(chart, values), "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(NAMESPACED["watchNamespaces"])
    for role in roles:
        assert _grants(role["rules"]) == expected


def test_cluster_wide_install_has_no_namespaced_roles(chart):
    docs = render_docs(chart)
    assert by_kind(docs, "Role") == [] and by_kind(docs, "RoleBinding") == []
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": by_kind(docs, "ClusterRole")[0]["metadata"]["name"]}


@pytest.mark.parametrize("values", [{}, NAMESPACED, {"peering": {"name": "x"}}], ids=["cluster", "namespaced", "peering"])
def test_no_secret_reads_and_no_escalation_verbs(chart, values):
    docs = render_docs(chart, values)
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for (group, resource), verbs in _grants(role["rules"]).items():
            assert resource != "secrets", "the operator passes Secret names to pods; it never reads them"
            assert "*" not in (group, resource)
            assert not verbs & FORBIDDEN_VERBS, (resource, verbs)


# --- cross-checks against the operator's code ---------------------------------------------------

RUN = parse_run({
    "apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun",
    "metadata": {"name": "demo", "namespace": "ml-research"},
    "spec": {"model": {"source": "Qwen/Qwen2.5-Math-1.5B"}, "dataset": {"uri": "s3://empo-data/train.jsonl"}},
})


def test_operator_may_create_every_kind_it_creates():
    for (api_version, _kind), plural in kube.PLURALS.items():
        group = api_version.rpartition("/")[0]
        if (group, plural) == ("empo.dev", "emporuns"):
            continue  # users create runs; the operator only reads and patches them
        assert "create" in RUN_RULES[(group, plural)], plural


def test_operator_holds_what_it_grants_the_trainer(chart):
    """RBAC lets a subject create a Role only with permissions it holds itself (no escalate)."""
    trainer_role = next(o for o in builders.build_trainer_rbac(RUN) if o["kind"] == "Role")
    roles = [r for r in by_kind(render_docs(chart, NAMESPACED), "Role") if r["metadata"]["namespace"] == RUN.namespace]
    held = _grants(roles[0]["rules"])
    for rule in trainer_role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert set(rule["verbs"]) <= held.get((group, resource), set()), (resource, rule["verbs"])
