"""What the chart renders for the default (cluster-wide) install and a namespaced one."""

import helm_python as helm
import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError, all_versions

from empo_operator.settings import from_env

from .conftest import CHART_DIR, NAMESPACED, RELEASE_NAMESPACE, by_kind, one, render_docs

# Kinds from other projects' CRDs, which kubernetes-validate has no schema for; each is checked
# by its own test below.
FOREIGN_KINDS = {"ServiceMonitor", "KopfPeering", "ClusterKopfPeering"}

# Value sets that together turn every template and branch on.
VALUE_SETS = {
    "defaults": {},
    "namespaced": NAMESPACED,
    "peering-cluster": {"peering": {"name": "empo"}},
    "peering-namespaced": {**NAMESPACED, "peering": {"name": "empo"}},
    "everything": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "imagePullSecrets": [{"name": "registry"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "podAnnotations": {"example.com/a": "b"},
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "image": {"digest": "sha256:" + "a" * 64},
        "priorityClassName": "system-cluster-critical",
    },
    "no-crds-no-rbac": {"crds": {"install": False}, "rbac": {"create": False},
                        "serviceAccount": {"create": False, "name": "existing"}, "metrics": {"service": {"enabled": False}}},
}
# The oldest Kubernetes the chart supports (kubeVersion in Chart.yaml) and the newest schema known.
KUBE_VERSIONS = ["1.30.0", all_versions()[-1]]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_object_is_valid_for_kubernetes(chart, name):
    docs = render_docs(chart, VALUE_SETS[name])
    assert docs
    checked = 0
    for doc in docs:
        if doc["kind"] in FOREIGN_KINDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except SchemaNotFoundError:  # pragma: no cover - a built-in kind must have a schema
                pytest.fail(f"no schema for {doc['kind']} {doc['apiVersion']}")
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}): "
                            f"{'.'.join(map(str, e.path))}: {e.message}")
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("values", [{}, NAMESPACED], ids=["defaults", "namespaced"])
def test_chart_lints_clean(values):
    report = helm.lint(CHART_DIR, values, strict=True, namespace=RELEASE_NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_default_install_objects(chart):
    docs = render_docs(chart)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Deployment",
                            "Service", "ServiceAccount"])
    for d in docs:
        if d["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == RELEASE_NAMESPACE


def test_namespaced_install_objects(chart):
    docs = render_docs(chart, NAMESPACED)
    assert {r["metadata"]["namespace"] for r in by_kind(docs, "Role")} == {"ml-research", "ml-staging"}
    assert {r["metadata"]["namespace"] for r in by_kind(docs, "RoleBinding")} == {"ml-research", "ml-staging"}
    for rb in by_kind(docs, "RoleBinding"):
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "empo-empo-operator", "namespace": RELEASE_NAMESPACE}]
        assert rb["roleRef"]["kind"] == "Role"
    assert len(by_kind(docs, "ClusterRole")) == 1  # CRD discovery only; checked in test_rbac


def _container(docs):
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _env(docs) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in _container(docs)["env"]}


def test_deployment_runs_one_operator_safely(chart):
    docs = render_docs(chart)
    deploy = one(docs, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = _container(docs)
    assert c["image"] == "ghcr.io/empo-dev/empo-operator:0.1.0"  # appVersion
    assert c["command"] == ["python", "-m", "empo_operator"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    # a read-only root still has a writable /tmp
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


@pytest.mark.parametrize(
    "values, expected",
    [
        ({}, {"namespaces": (), "peering": "", "trainer_image": "ghcr.io/empo-dev/empo-trainer:0.1.0",
              "default_storage_uri": "", "s3_endpoint": "", "metrics_port": 8080, "health_port": 8081,
              "log_format": "plain", "restart_backoff_seconds": 10.0}),
        ({**NAMESPACED, "peering": {"name": "empo"}, "trainer": {"image": "registry.local/trainer:9"},
          "storage": {"defaultUri": "s3://runs/exp", "s3Endpoint": "http://minio.storage:9000"},
          "logFormat": "json", "metrics": {"port": 9090}, "health": {"port": 9091},
          "restartBackoff": {"seconds": 2, "maxSeconds": 60}, "resyncSeconds": 10, "apiThreads": 64},
         {"namespaces": ("ml-research", "ml-staging"), "peering": "empo", "trainer_image": "registry.local/trainer:9",
          "default_storage_uri": "s3://runs/exp", "s3_endpoint": "http://minio.storage:9000",
          "metrics_port": 9090, "health_port": 9091, "log_format": "json",
          "restart_backoff_seconds": 2.0, "restart_backoff_max_seconds": 60.0, "resync_seconds": 10.0,
          "api_threads": 64}),
    ],
    ids=["defaults", "everything-set"],
)
def test_operator_reads_the_settings_the_chart_sets(chart, values, expected):
    """The Deployment's env, read by the operator's own settings parser, gives the chart's values."""
    docs = render_docs(chart, values)
    settings = from_env(_env(docs))
    for field, value in expected.items():
        assert getattr(settings, field) == value, field
    ports = {p["name"]: p["containerPort"] for p in _container(docs)["ports"]}
    assert ports == {"metrics": settings.metrics_port, "health": settings.health_port}


def test_kopf_identity_is_the_pod_name(chart):
    env = {e["name"]: e for e in _container(render_docs(chart))["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_scheduling_and_pull_settings_reach_the_pod(chart):
    values = VALUE_SETS["everything"]
    docs = render_docs(chart, values)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["containers"][0]["image"] == "ghcr.io/empo-dev/empo-operator@sha256:" + "a" * 64
    assert _env(docs)["HTTPS_PROXY"] == "http://proxy:3128"


def test_metrics_service_and_service_monitor_select_the_operator(chart):
    docs = render_docs(chart, VALUE_SETS["everything"])
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    assert by_kind(render_docs(chart), "ServiceMonitor") == []


def test_service_monitor_without_service_is_refused(chart):
    with pytest.raises(helm.HelmError, match="metrics.service.enabled"):
        render_docs(chart, {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})


@pytest.mark.parametrize(
    "values, kind, namespaces",
    [
        ({}, None, []),
        ({"peering": {"name": "empo"}}, "ClusterKopfPeering", [None]),
        ({**NAMESPACED, "peering": {"name": "empo"}}, "KopfPeering", ["ml-research", "ml-staging"]),
        ({"peering": {"name": "empo", "create": False}}, None, []),
    ],
    ids=["standalone", "cluster", "namespaced", "bring-your-own"],
)
def test_peering(chart, values, kind, namespaces):
    docs = render_docs(chart, values)
    peerings = [d for d in docs if d["kind"] in ("KopfPeering", "ClusterKopfPeering")]
    assert [d["kind"] for d in peerings] == [kind] * len(namespaces)
    assert [d["metadata"].get("namespace") for d in peerings] == namespaces
    for d in peerings:
        assert d["apiVersion"] == "kopf.dev/v1" and d["metadata"]["name"] == "empo"
    assert _env(docs)["EMPO_PEERING"] == values.get("peering", {}).get("name", "")


def test_no_rbac_and_existing_service_account(chart):
    docs = render_docs(chart, VALUE_SETS["no-crds-no-rbac"])
    assert sorted(d["kind"] for d in docs) == ["Deployment"]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
