"""The NetworkPolicy of a run's Ray cluster: valid for the API server, selecting exactly the run's
pods, and letting in only the run's own pods (its RayJobs' submitters among them) and KubeRay (issue 18)."""

import kubernetes_validate

from empo_api.models import EmpoRun
from empo_operator import builders
from empo_operator.network_policy import DASHBOARD_PORT, build_network_policy
from empo_operator.settings import Settings

SETTINGS = Settings(trainer_image="registry.example/empo-trainer:1", default_storage_uri="s3://runs-bucket/empo")
UID = "3f2a9c1e-0000-4000-8000-000000000000"


def _run(math_s3, **spec):
    return EmpoRun.model_validate({**math_s3, "metadata": {"name": "qwen-run", "namespace": "ml", "uid": UID},
                                   "spec": {**math_s3["spec"], **spec}})


def test_policy_is_valid_and_selects_the_runs_pods(math_s3):
    run = _run(math_s3, maxRestarts=2)
    policy = build_network_policy(run)
    kubernetes_validate.validate(policy, "1.32", strict=True)
    assert policy["metadata"]["namespace"] == "ml"
    rayjob = builders.build_rayjob(run, SETTINGS, attempt=1)
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
    rules = build_network_policy(run)["spec"]["ingress"]
    assert policy_types(run) == ["Ingress"]
    own, kuberay, metrics = rules
    assert own == {"from": [{"podSelector": {"matchLabels": {builders.LABEL_RUN: "qwen-run"}}}]}
    assert build_network_policy(_run(math_s3, maxRestarts=0)) == build_network_policy(run)
    assert kuberay["ports"] == [{"protocol": "TCP", "port": DASHBOARD_PORT}]
    assert kuberay["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}
    assert "from" not in metrics and metrics["ports"][0]["port"] == builders.TRAINING_METRICS_PORT
    assert all(r.get("ports") for r in rules[1:])  # beyond the run's own pods, only named ports


def policy_types(run):
    return build_network_policy(run)["spec"]["policyTypes"]


def test_the_operator_creates_it_and_ray_uses_token_auth(math_s3):
    run = _run(math_s3)
    children = builders.build_children(run, SETTINGS)
    kinds = [c["kind"] for c in children]
    assert kinds.index("NetworkPolicy") < kinds.index("RayJob")  # closed before any Ray pod starts
    rayjob = children[-1]
    assert rayjob["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
