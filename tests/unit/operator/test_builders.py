"""Children of an EmpoRun: valid for KubeRay's own CRD and for Kubernetes (strict), sized by the plan."""

import copy
import dataclasses
import json
import shlex

import kubernetes_validate
import pytest

from empo_api import schema_check
from empo_api.errors import SpecError
from empo_api.models import EmpoRun
from empo_operator import builders
from empo_operator.children import build_children
from empo_operator.defaults import defaulted
from empo_operator.lifecycle import immutable_changes
from empo_operator.rayjob import CACHE_MOUNT, CACHE_VOLUME, build_rayjob, check_identities, pod_templates
from empo_operator.settings import Settings

SETTINGS = Settings(trainer_image="registry.example/empo-trainer:1", default_storage_uri="s3://runs-bucket/empo",
                    s3_endpoint="http://seaweed.storage:8333")


SMALL = {"apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun",
         "spec": {"model": {"source": "Qwen/Qwen2.5-Math-1.5B"}, "dataset": {"uri": "s3://data/math.jsonl"}}}


def containers(rayjob, group=None):
    rc = rayjob["spec"]["rayClusterSpec"]
    if group is None:
        return rc["headGroupSpec"]["template"]["spec"]["containers"]
    g = next(w for w in rc["workerGroupSpecs"] if w["groupName"] == group)
    return g["template"]["spec"]["containers"]


def env(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_every_child_is_valid(math_s3, tiny, rayjob_schema):
    for manifest in (math_s3, tiny):
        run = EmpoRun.model_validate(manifest)
        for attempt in (0, 2):
            children = build_children(defaulted(run, SETTINGS), SETTINGS, attempt)
            assert [c["kind"] for c in children] == ["ConfigMap", "ServiceAccount", "Role", "RoleBinding",
                                                     "NetworkPolicy", "RayJob"]
            for child in children[:-1]:
                kubernetes_validate.validate(child, "1.32", strict=True)
            errors = schema_check.check(children[-1], rayjob_schema)
            assert errors == [], [str(e) for e in errors]


def test_schema_check_would_catch_a_typo(math_s3, rayjob_schema):
    """Guards the test above against passing vacuously: an unknown RayJob field is reported."""
    rayjob = build_rayjob(defaulted(EmpoRun.model_validate(math_s3), SETTINGS), SETTINGS)
    rayjob["spec"]["shutdownAfterJobFinish"] = True
    assert [e.path for e in schema_check.check(rayjob, rayjob_schema)] == ["spec.shutdownAfterJobFinish"]


def test_rayjob_of_the_8_gpu_example(math_s3):
    run = EmpoRun.model_validate(math_s3)
    rj = build_rayjob(defaulted(run, SETTINGS), SETTINGS)
    spec = rj["spec"]
    assert rj["metadata"]["name"] == "qwen-math-7b-empo-00000-0"  # 00000: no uid outside a cluster
    assert rj["metadata"]["labels"][builders.KUEUE_QUEUE_LABEL] == "gpu-research"
    assert spec["entrypoint"] == "python -m empo_trainer run --config /etc/empo/spec.json"
    # queued: created suspended (as Kueue's webhook would), so it waits for Kueue's admission
    assert spec["shutdownAfterJobFinishes"] is True and spec["suspend"] is True
    # KubeRay's TTL is when it deletes the RayCluster: every GPU is freed as the job ends.
    assert spec["ttlSecondsAfterFinished"] == 0 and "activeDeadlineSeconds" not in spec
    groups = {g["groupName"]: g for g in spec["rayClusterSpec"]["workerGroupSpecs"]}
    assert {n: (g["replicas"], g["minReplicas"], g["maxReplicas"]) for n, g in groups.items()} == \
        {"sampler": (4, 4, 4), "learner": (4, 4, 4)}
    for name, g in groups.items():
        pod = g["template"]["spec"]
        (c,) = pod["containers"]
        assert c["resources"]["limits"] == {"cpu": "8", "memory": "96Gi", "nvidia.com/gpu": 1}
        assert c["image"] == "registry.example/empo-trainer:1"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        # Custom resources through `ray start --resources`, which every KubeRay >= 1.3 passes on;
        # workerGroupSpecs[].resources exists only from KubeRay 1.5 (older ones prune it).
        assert "resources" not in g
        (word,) = shlex.split(g["rayStartParams"]["resources"])  # what the shell hands `ray start`
        assert json.loads(word) == {f"empo_{name}": 1}
        # KubeRay's own reading (getResourcesMap: trim quotes, parse JSON) to add accelerators.
        assert json.loads(g["rayStartParams"]["resources"].strip("'\"` ")) == {f"empo_{name}": 1}
    (head,) = containers(rj)
    e = env(head)
    assert e["EMPO_RUN_NAME"] == "qwen-math-7b-empo" and e["EMPO_RUN_NAMESPACE"] == "ml-research"
    assert e["EMPO_ATTEMPT"] == "0"
    assert e["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "empo-s3", "key": "AWS_ACCESS_KEY_ID"}}
    assert e["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "empo-s3", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert e["AWS_REGION"] == "us-east-1"
    assert e["AWS_ENDPOINT_URL"] == "http://seaweed.storage:8333"  # operator default: the spec sets none
    assert head["volumeMounts"][0] == {"name": "empo-config", "mountPath": "/etc/empo", "readOnly": True}
    pod = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "qwen-math-7b-empo-trainer"
    assert pod["volumes"][0] == {"name": "empo-config", "configMap": {"name": "qwen-math-7b-empo-config"}}


def test_cpu_run_has_no_sampler_group_and_no_gpus(tiny):
    rj = build_rayjob(defaulted(EmpoRun.model_validate(tiny), SETTINGS), SETTINGS)
    groups = rj["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["learner"]
    (c,) = groups[0]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert "nodeSelector" not in groups[0]["template"]["spec"]
    assert not any(k.startswith("AWS_") and k != "AWS_ENDPOINT_URL" for k in env(c))  # no Secret
    assert builders.KUEUE_QUEUE_LABEL not in rj["metadata"]["labels"]
    assert builders.KUEUE_PRIORITY_LABEL not in rj["metadata"]["labels"]


def test_kueue_priority_class_label_reaches_the_rayjob_only(math_s3):
    """Kueue 0.17 reads a WorkloadPriorityClass from the job's label (tests/integration/cluster/test_kueue.py)."""
    run = copy.deepcopy(math_s3)  # the fixture is the session's
    run["metadata"]["labels"] = {builders.KUEUE_PRIORITY_LABEL: "research-high"}
    children = build_children(defaulted(EmpoRun.model_validate(run), SETTINGS), SETTINGS, 0)
    rj = children[-1]
    assert rj["metadata"]["labels"][builders.KUEUE_PRIORITY_LABEL] == "research-high"
    assert all(builders.KUEUE_PRIORITY_LABEL not in c["metadata"]["labels"] for c in children[:-1])
    for _, template in pod_templates(rj):
        assert builders.KUEUE_PRIORITY_LABEL not in template["metadata"]["labels"]


def test_settings_fill_only_what_the_spec_leaves_unset(math_s3, tiny):
    cm = builders.build_configmap(defaulted(EmpoRun.model_validate(tiny), SETTINGS))
    loaded = json.loads(cm["data"]["spec.json"])
    assert loaded["metadata"] == {"name": "tiny-smoke", "namespace": "default"}
    assert loaded["spec"]["storage"]["uri"] == "s3://empo-runs/tests"  # set by the user: kept
    assert loaded["spec"]["ray"]["image"] == "registry.example/empo-trainer:1"
    assert list(cm["data"]) == ["spec.json"]  # the run's identity travels in the manifest only
    EmpoRun.model_validate(loaded)  # the trainer loads it like a manifest file
    unset = copy.deepcopy(math_s3)
    del unset["spec"]["storage"]["uri"]
    cm = builders.build_configmap(defaulted(EmpoRun.model_validate(unset), SETTINGS))
    spec = json.loads(cm["data"]["spec.json"])["spec"]
    assert spec["storage"]["uri"] == "s3://runs-bucket/empo"
    assert spec["storage"]["endpoint"] == "http://seaweed.storage:8333"


def test_trainer_role_allows_only_this_runs_status(math_s3):
    sa, role, binding = builders.build_trainer_rbac(EmpoRun.model_validate(math_s3))
    assert role["rules"] == [{"apiGroups": ["empo.dev"], "resources": ["emporuns/status"],
                              "resourceNames": ["qwen-math-7b-empo"], "verbs": ["get", "patch"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "ml-research"}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


UID = "3f2a1c0e-1111-2222-3333-444455556666"


@pytest.mark.parametrize("run_name, attempt, expected", [
    ("short", 0, "short-3f2a1-0"),
    ("short", 3, "short-3f2a1-3"),
    ("a" * 39, 0, "a" * 39 + "-3f2a1-0"),
    ("a" * 48, 0, "a" * 32 + "-" + builders.fit_name("a" * 48, "-3f2a1-0")[-14:]),
])
def test_rayjob_names(run_name, attempt, expected):
    assert builders.rayjob_name(run_name, UID, attempt) == expected


def test_attempt_names_never_collide_with_other_runs():
    """`x` attempt 1 was `x-r1`, the name of run `x-r1`'s first attempt; and a run applied again
    under its old name got its predecessor's (still finalizing) RayJob."""
    uids = ("3f2a1c0e", "9b8c7d6e")
    runs = ("x", "x-r1", "x-3f2a1", "x-3f2a1-1", "y" * 50 + "-alpha", "y" * 50 + "-bravo")
    names = [builders.rayjob_name(r, u, k) for r in runs for u in uids for k in (0, 1, 12)]
    assert len(set(names)) == len(names)
    assert all(len(n) <= 47 and n[-1] != "-" for n in names)


def test_role_exists_before_its_binding():
    """Real RBAC lets the operator bind a Role only once it exists (escalation check)."""
    run = EmpoRun.model_validate({**SMALL, "metadata": {"name": "r", "namespace": "ns", "uid": UID}})
    children = build_children(defaulted(run, SETTINGS), SETTINGS)
    waves = [[c["kind"] for c in w] for w in builders.creation_waves(children)]
    position = {kind: i for i, wave in enumerate(waves) for kind in wave}
    assert position["Role"] < position["RoleBinding"] < position["RayJob"]
    assert position["ConfigMap"] < position["RayJob"] and position["ServiceAccount"] < position["RayJob"]


def test_immutable_changes():
    old = {"model": {"source": "a"}, "suspend": False, "eval": {"every": 0}, "storage": {"uri": "s3://b/p", "keepLast": 3}}
    new = {"model": {"source": "b"}, "suspend": True, "eval": {"every": 10}, "storage": {"uri": "s3://b/q", "keepLast": 5}}
    assert immutable_changes(old, new) == ["spec.model.source", "spec.storage.uri"]
    assert immutable_changes(old, {**old, "suspend": True, "maxRestarts": 1}) == []


def test_what_platform_teams_set_reaches_every_pod(rayjob_schema):
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu-a"]}]}]}}}
    ray = {"imagePullSecrets": [{"name": "registry"}], "priorityClassName": "training-high", "affinity": affinity,
           "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                   {"name": "HF_TOKEN", "secretKeyRef": {"name": "hf", "key": "token"}}],
           "envFrom": [{"secretRef": {"name": "team-secrets"}}]}
    run = EmpoRun.model_validate({**SMALL, "metadata": {"name": "r", "namespace": "ns", "uid": UID},
                                  "spec": {**SMALL["spec"], "ray": ray}})
    rj = build_rayjob(defaulted(run, SETTINGS), SETTINGS)
    assert schema_check.check(rj, rayjob_schema) == []
    rc = rj["spec"]["rayClusterSpec"]
    pods = [rc["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in rc["workerGroupSpecs"]]
    for pod in pods:
        assert pod["imagePullSecrets"] == [{"name": "registry"}] and pod["priorityClassName"] == "training-high"
        (c,) = pod["containers"]
        assert env(c)["HTTPS_PROXY"] == "http://proxy:3128"
        assert env(c)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
        assert c["envFrom"] == [{"secretRef": {"name": "team-secrets"}}]
        assert env(c)["EMPO_RUN_NAME"] == "r"  # the operator's own variables stay
    assert all(g["template"]["spec"]["affinity"] == affinity for g in rc["workerGroupSpecs"])
    # The submitter's pod is pulled, prioritised and identified like the head.
    submitter = rj["spec"]["submitterPodTemplate"]["spec"]
    head = rc["headGroupSpec"]["template"]["spec"]
    for field in ("imagePullSecrets", "priorityClassName", "serviceAccountName"):
        assert submitter[field] == head[field], field


def test_every_pod_runs_as_the_runs_own_serviceaccount_and_no_other(tiny):
    run = EmpoRun.model_validate({**tiny, "metadata": {"name": "r", "namespace": "ns", "uid": UID}})
    rj = build_rayjob(defaulted(run, SETTINGS), SETTINGS)
    where = [w for w, _ in pod_templates(rj)]
    assert where[0].endswith("headGroupSpec.template") and where[-1] == "submitterPodTemplate" and len(where) >= 3
    assert {t["spec"]["serviceAccountName"] for _, t in pod_templates(rj)} == {"r-trainer"}
    # Only the driver (head) holds the token it needs to report progress.
    assert [w for w, t in pod_templates(rj) if t["spec"].get("automountServiceAccountToken") is not False] \
        == [where[0]]
    for hijack in ("kube-system-admin", None):
        bad = copy.deepcopy(rj)
        tpl = bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
        if hijack:
            tpl["serviceAccountName"] = hijack
        else:
            del tpl["serviceAccountName"]
        with pytest.raises(SpecError, match="may only run as 'r-trainer'"):
            check_identities(bad, "r")


@pytest.mark.parametrize("env_var, message", [
    ({"name": "EMPO_ATTEMPT", "value": "9"}, "set by the operator"),
    ({"name": "X"}, "exactly one"),
    ({"name": "X", "value": "1", "secretKeyRef": {"name": "s", "key": "k"}}, "exactly one"),
])
def test_extra_env_is_checked(env_var, message):
    with pytest.raises(ValueError, match=message):
        EmpoRun.model_validate({**SMALL, "metadata": {"name": "r"}, "spec": {**SMALL["spec"], "ray": {"env": [env_var]}}})


def test_every_pod_passes_the_restricted_standard_unless_the_platform_says_otherwise(tiny):
    run = EmpoRun.model_validate({**tiny, "metadata": {"name": "r", "namespace": "ns", "uid": UID}})
    for where, template in pod_templates(build_rayjob(defaulted(run, SETTINGS), SETTINGS)):
        pod = template["spec"]
        assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}, where
        for c in pod["containers"]:
            assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}, where
    root = dataclasses.replace(SETTINGS, run_pod_security_context={},
                               run_security_context={"capabilities": {"add": ["IPC_LOCK"]}})
    for where, template in pod_templates(build_rayjob(defaulted(run, root), root)):
        assert "securityContext" not in template["spec"], where
        assert template["spec"]["containers"][0]["securityContext"] == {"capabilities": {"add": ["IPC_LOCK"]}}


def test_every_ray_pod_checkpoints_when_told_to_stop_within_a_grace_sized_from_the_plan():
    """KubeRay's PID 1 (bash) passes no SIGTERM on: each Ray container's preStop hook tells the
    trainer (`empo_trainer preempt`), within a grace period that grows with the checkpoint."""
    def graces(manifest):
        run = EmpoRun.model_validate({**manifest, "metadata": {"name": "r", "namespace": "ns"}})
        rj = build_rayjob(defaulted(run, SETTINGS), SETTINGS)
        rc = rj["spec"]["rayClusterSpec"]
        pods = [rc["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in rc["workerGroupSpecs"]]
        for pod in pods:
            (c,) = pod["containers"]
            hook = c["lifecycle"]["preStop"]["exec"]["command"]
            assert hook[:5] == ["python", "-m", "empo_trainer", "preempt", "--stop-ray"], hook
            assert ("--worker" in hook) == (c["name"] == "ray-worker")
            wait = float(hook[hook.index("--wait") + 1])
            driver_grace = float(env(c)["EMPO_PREEMPT_GRACE_SECONDS"])
            # the driver gives up its step, then the hook, before the kubelet's SIGKILL
            assert driver_grace < wait < pod["terminationGracePeriodSeconds"]
        return {pod["terminationGracePeriodSeconds"] for pod in pods}

    small = graces(SMALL)
    seven_b = copy.deepcopy(SMALL)
    seven_b["spec"]["model"]["source"] = "Qwen/Qwen2.5-Math-7B"
    big = graces(seven_b)
    assert len(small) == len(big) == 1 and min(big) > min(small) >= 60, (small, big)
    seven_b["spec"]["ray"] = {"terminationGracePeriodSeconds": 900}
    assert graces(seven_b) == {900}


def test_ray_pods_cache_the_model_on_a_volume_with_the_disk_they_need():
    """The model, checkpoints and Hugging Face cache go to one volume per pod, not the container
    layer; on the node's disk each pod requests what its role fills (a learner: two checkpoints)."""
    def pods(manifest, settings=SETTINGS):
        run = EmpoRun.model_validate({**manifest, "metadata": {"name": "r", "namespace": "ns"}})
        rj = build_rayjob(defaulted(run, settings), settings)
        rc = rj["spec"]["rayClusterSpec"]
        out = {"head": rc["headGroupSpec"]["template"]["spec"]}
        out.update({g["groupName"]: g["template"]["spec"] for g in rc["workerGroupSpecs"]})
        return out

    def disk(pod):
        (c,) = pod["containers"]
        return c["resources"]["requests"].get("ephemeral-storage"), c["resources"]["limits"].get("ephemeral-storage")

    seven_b = copy.deepcopy(SMALL)
    seven_b["spec"]["model"]["source"] = "Qwen/Qwen2.5-Math-7B"
    seven_b["spec"]["sampler"] = {"backend": "vllm", "replicas": 1}
    by_role = pods(seven_b)
    for role, pod in by_role.items():
        (c,) = pod["containers"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == CACHE_VOLUME]
        assert volume == {"name": CACHE_VOLUME, "emptyDir": {}}
        assert {"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT} in c["volumeMounts"]
        assert env(c)["EMPO_CACHE_DIR"] == CACHE_MOUNT and env(c)["HF_HOME"].startswith(CACHE_MOUNT)
    gib = {role: int(disk(pod)[0].removesuffix("Gi")) for role, pod in by_role.items()}
    # 7.6B parameters: bf16 weights 14 GiB everywhere, plus 2 x 85 GiB of checkpoints on the learner
    assert 14 < gib["head"] == gib["sampler"] < 20 and gib["learner"] > 170, gib
    assert all(disk(pod)[1] is None for pod in by_role.values())  # a request, no limit: never evicted for it

    pvc = dataclasses.replace(SETTINGS, run_cache_volume={"persistentVolumeClaim": {"claimName": "models"}})
    for pod in pods(seven_b, pvc).values():
        assert {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": "models"}} in pod["volumes"]
        assert disk(pod) == ("2Gi", None)  # only the logs on the node
    seven_b["spec"]["ray"] = {"head": {"ephemeralStorage": "50Gi"}}
    assert disk(pods(seven_b)["head"]) == ("50Gi", "50Gi")
