"""The NetworkPolicy of a run's Ray cluster: valid for the API server, selecting exactly the run's
pods, letting in only the run's own pods (its RayJobs' submitters among them) and KubeRay's pods in
KubeRay's namespace, and letting out only what the run talks to (issues 18, 25)."""

from dataclasses import replace

import kubernetes_validate

from empo_api.models import EmpoRun
from empo_operator import builders
from empo_operator.children import build_children
from empo_operator.defaults import defaulted
from empo_operator.rayjob import build_rayjob
from empo_operator.network_policy import DASHBOARD_PORT, build_network_policy
from empo_operator.settings import Settings

SETTINGS = Settings(trainer_image="registry.example/empo-trainer:1", default_storage_uri="s3://runs-bucket/empo")
UID = "3f2a9c1e-0000-4000-8000-000000000000"


def _run(math_s3, **spec):
    return EmpoRun.model_validate({**math_s3, "metadata": {"name": "qwen-run", "namespace": "ml", "uid": UID},
                                   "spec": {**math_s3["spec"], **spec}})


def test_policy_is_valid_and_selects_the_runs_pods(math_s3):
    run = _run(math_s3, maxRestarts=2)
    policy = build_network_policy(defaulted(run, SETTINGS), SETTINGS)
    kubernetes_validate.validate(policy, "1.32", strict=True)
    assert policy["metadata"]["namespace"] == "ml"
    rayjob = build_rayjob(defaulted(run, SETTINGS), SETTINGS, attempt=1)
    cluster = rayjob["spec"]["rayClusterSpec"]
    # Every Ray pod and the submitter of every attempt are covered, and only pods of this run.
    pods = [cluster["headGroupSpec"]["template"], rayjob["spec"]["submitterPodTemplate"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for pod in pods:
        assert selector.items() <= pod["metadata"]["labels"].items()
    assert selector == {builders.LABEL_RUN: "qwen-run"}


def test_only_the_run_and_kuberay_get_in_whatever_maxrestarts(math_s3):
    run = _run(math_s3, maxRestarts=6)
    rules = build_network_policy(defaulted(run, SETTINGS), SETTINGS)["spec"]["ingress"]
    assert policy_types(run) == ["Ingress", "Egress"]
    own, kuberay, metrics = rules
    assert own == {"from": [{"podSelector": {"matchLabels": {builders.LABEL_RUN: "qwen-run"}}}]}
    assert build_network_policy(defaulted(_run(math_s3, maxRestarts=0), SETTINGS), SETTINGS) == \
        build_network_policy(defaulted(run, SETTINGS), SETTINGS)
    assert kuberay["ports"] == [{"protocol": "TCP", "port": DASHBOARD_PORT}]
    # KubeRay's pods in KubeRay's namespace only: a tenant can label a pod of its own namespace
    # kuberay-operator, but not rename its namespace (the API server sets that label).
    assert kuberay["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}},
                                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}}]
    assert "from" not in metrics and metrics["ports"][0]["port"] == builders.TRAINING_METRICS_PORT
    assert all(r.get("ports") for r in rules[1:])  # beyond the run's own pods, only named ports


def test_kuberay_elsewhere_and_the_api_servers_proxy_are_settings(math_s3):
    settings = replace(SETTINGS, kuberay_namespace="ray-system", dashboard_cidrs=("198.18.0.1/32",))
    _, kuberay, _ = build_network_policy(defaulted(_run(math_s3), settings), settings)["spec"]["ingress"]
    assert kuberay["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ray-system"}
    assert kuberay["from"][1:] == [{"ipBlock": {"cidr": "198.18.0.1/32"}}]


def egress(run, settings=SETTINGS):
    return build_network_policy(defaulted(run, settings), settings)["spec"]["egress"]


def ports(rule):
    return {(p["protocol"], p["port"]) for p in rule.get("ports", [])}


def test_egress_reaches_its_own_pods_dns_the_api_server_and_storage_only(math_s3):
    run = _run(math_s3, storage={"uri": "s3://runs-bucket/x", "endpoint": "http://10.1.2.3:8333"},
               model={"source": "s3://models/qwen"})
    rules = egress(run, replace(SETTINGS, api_server_cidrs=("10.0.0.1/32",)))
    assert rules[0] == {"to": [{"podSelector": {"matchLabels": {builders.LABEL_RUN: "qwen-run"}}}]}
    assert ports(rules[1]) == {("UDP", 53), ("TCP", 53)} and "to" not in rules[1]
    assert rules[2] == {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
                        "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}
    assert rules[3] == {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"protocol": "TCP", "port": 8333}]}
    assert len(rules) == 4  # nothing else: no hub, no tracking


def test_egress_follows_what_the_spec_reads_and_reports_to(math_s3):
    hub = _run(math_s3, storage={"uri": "s3://runs-bucket/x", "endpoint": "https://minio.storage.svc"},
               tracking={"mlflow": {"trackingUri": "http://mlflow.tools:5000"}})
    rules = egress(hub)
    # A DNS name is no address a NetworkPolicy can name: the port alone.
    assert {"ports": [{"protocol": "TCP", "port": 443}]} in rules
    assert {"ports": [{"protocol": "TCP", "port": 5000}]} in rules
    aws = egress(_run(math_s3, storage={"uri": "s3://runs-bucket/x"}, model={"source": "s3://models/qwen"}))
    assert {"ports": [{"protocol": "TCP", "port": 443}]} in aws
    extra = {"to": [{"ipBlock": {"cidr": "10.0.0.10/32"}}], "ports": [{"protocol": "TCP", "port": 3128}]}
    assert extra in egress(hub, replace(SETTINGS, extra_egress=(extra,)))
    open_settings = replace(SETTINGS, restrict_egress=False)
    open_egress = build_network_policy(defaulted(hub, open_settings), open_settings)["spec"]
    assert open_egress["policyTypes"] == ["Ingress"] and "egress" not in open_egress
    kubernetes_validate.validate(build_network_policy(defaulted(hub, SETTINGS), SETTINGS), "1.32", strict=True)


def policy_types(run):
    return build_network_policy(defaulted(run, SETTINGS), SETTINGS)["spec"]["policyTypes"]


def test_the_operator_creates_it_and_ray_uses_token_auth(math_s3):
    run = _run(math_s3)
    children = build_children(defaulted(run, SETTINGS), SETTINGS)
    kinds = [c["kind"] for c in children]
    assert kinds.index("NetworkPolicy") < kinds.index("RayJob")  # closed before any Ray pod starts
    rayjob = children[-1]
    assert rayjob["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}


def test_the_policy_judged_connection_by_connection(math_s3):
    """The judge the node tests use on recorded connections (tests/e2e/policy_check.py), on this policy."""
    from tests.e2e.policy_check import Flow, allowed

    run = _run(math_s3, storage={"uri": "s3://runs-bucket/x", "endpoint": "http://198.18.0.1:8333"})
    settings = replace(SETTINGS, api_server_cidrs=("198.18.0.1/32",), api_server_ports=(6443,))
    policy = build_network_policy(defaulted(run, settings), settings)
    own = {"empo.dev/run": "qwen-run"}
    pods = {"10.0.0.2": {"name": "head", "namespace": "ml", "labels": own},
            "10.0.0.3": {"name": "learner", "namespace": "ml", "labels": own},
            "10.0.0.4": {"name": "kuberay", "namespace": "kuberay-system", "labels": {"app.kubernetes.io/name": "kuberay-operator"}},
            "10.0.0.5": {"name": "impostor", "namespace": "tenant", "labels": {"app.kubernetes.io/name": "kuberay-operator"}},
            "10.0.0.6": {"name": "neighbour", "namespace": "ml", "labels": {"app": "other"}}}
    namespaces = {n: {"kubernetes.io/metadata.name": n} for n in ("ml", "kuberay-system", "tenant")}

    def ok(src, dst, port, protocol="TCP"):
        return allowed(Flow(protocol, src, dst, port), [policy], pods, namespaces, node_ip="198.18.0.1")[0]

    assert ok("10.0.0.3", "10.0.0.2", 6379) and ok("10.0.0.2", "10.0.0.3", 40000)  # the run's own pods
    assert ok("10.0.0.4", "10.0.0.2", DASHBOARD_PORT) and not ok("10.0.0.4", "10.0.0.2", 6379)
    assert not ok("10.0.0.5", "10.0.0.2", DASHBOARD_PORT)  # KubeRay's label, another namespace
    assert not ok("10.0.0.6", "10.0.0.2", 6379) and ok("10.0.0.6", "10.0.0.2", builders.TRAINING_METRICS_PORT)
    assert ok("198.18.0.1", "10.0.0.2", 8080)  # the node (kubelet probes, the API server's proxy)
    assert ok("10.0.0.2", "198.18.0.1", 8333) and ok("10.0.0.2", "198.18.0.1", 6443)  # S3, the API server
    assert ok("10.0.0.2", "198.19.0.10", 53, "UDP")
    assert not ok("10.0.0.2", "198.18.0.1", 22) and not ok("10.0.0.2", "192.0.2.7", 8333)
    assert not ok("10.0.0.2", "10.0.0.6", 80)  # egress to a pod that is not the run's


def test_a_recorded_connection_is_judged_where_it_really_went():
    from tests.e2e.policy_check import Flow, parse_conntrack_line

    # A pod to the kubernetes Service, translated by kube-proxy to the API server's own address and port.
    line = ("    [NEW] tcp      6 120 SYN_SENT src=198.18.0.7 dst=198.19.0.1 sport=51234 dport=443 [UNREPLIED] "
            "src=198.18.0.1 dst=198.18.0.7 sport=39443 dport=51234")
    assert parse_conntrack_line(line) == Flow("TCP", "198.18.0.7", "198.18.0.1", 39443)
    assert parse_conntrack_line("conntrack v1.4.7 (conntrack-tools): 3 flow events have been shown.") is None
