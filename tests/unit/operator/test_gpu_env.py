"""GPU worker pods carry the NCCL settings a run needs, and spec.ray.env tunes them."""

import yaml

from empo_api.models import EmpoRun
from empo_operator.defaults import defaulted
from empo_operator.rayjob import build_rayjob
from empo_operator.settings import Settings

SETTINGS = Settings(trainer_image="registry.example/empo-trainer:1")


def groups(repo, **ray):
    doc = yaml.safe_load((repo / "examples" / "math-s3.yaml").read_text())
    doc["spec"]["ray"].update(ray)
    rayjob = build_rayjob(defaulted(EmpoRun.model_validate(doc), SETTINGS), SETTINGS)
    out = {}
    for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        (c,) = g["template"]["spec"]["containers"]
        out[g["groupName"]] = [(e["name"], e.get("value")) for e in c["env"]]
    return out


def test_gpu_pods_get_nccl_defaults(repo):
    for name, env in groups(repo).items():
        assert ("NCCL_DEBUG", "WARN") in env and ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1") in env, name


def test_spec_ray_env_replaces_a_default_and_adds_tuning(repo):
    env = groups(repo, env=[{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "NCCL_SOCKET_IFNAME", "value": "eth1"}])
    for name, pairs in env.items():
        names = [n for n, _ in pairs]
        assert names.count("NCCL_DEBUG") == 1 and ("NCCL_DEBUG", "INFO") in pairs, name
        assert ("NCCL_SOCKET_IFNAME", "eth1") in pairs


def test_an_8_gpu_pod_holds_8_bundles(repo):
    """One process per GPU: the pod advertises one unit of its group's resource per bundle it holds."""
    import json
    import shlex

    from empo_api.placement import plan_placement

    doc = yaml.safe_load((repo / "examples" / "math-s3.yaml").read_text())
    doc["spec"]["sampler"].update(replicas=2, gpusPerReplica=8, tensorParallelSize=2)  # 8 engines for 8 learners
    doc["spec"]["learner"].update(replicas=1, gpusPerReplica=8)
    doc["spec"]["algorithm"]["gradientAccumulation"] = 14
    run = EmpoRun.model_validate(doc)
    rayjob = build_rayjob(defaulted(run, SETTINGS), SETTINGS)
    plan = plan_placement(run.spec)
    for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        (word,) = shlex.split(g["rayStartParams"]["resources"])
        units = json.loads(word)[f"empo_{g['groupName']}"]
        (c,) = g["template"]["spec"]["containers"]
        bundles = plan.sampler_bundles if g["groupName"] == "sampler" else plan.learner_bundles
        assert units * g["replicas"] == len(bundles)  # the driver's actors, exactly
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 8 == units * bundles[0].gpus
    assert {g["groupName"]: json.loads(shlex.split(g["rayStartParams"]["resources"])[0])
            for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]} == \
        {"sampler": {"empo_sampler": 4}, "learner": {"empo_learner": 8}}
