"""The placement plan: worker groups sized to hold exactly the bundles the driver asks for."""

import pytest

from empo_api.models import EmpoRunSpec
from empo_api.placement import plan_placement


def spec(sampler: dict, learner: dict) -> EmpoRunSpec:
    return EmpoRunSpec.model_validate({"model": {"source": "m"}, "dataset": {"uri": "d.jsonl"},
                                       "sampler": sampler, "learner": learner,
                                       "ray": {"worker": {"cpu": "16", "memory": "128Gi"}}})


@pytest.mark.parametrize("name, sampler, learner, colocated, groups, sampler_bundles, learner_bundles", [
    ("1 GPU colocated",
     {"replicas": 0}, {"replicas": 1, "gpusPerReplica": 1},
     True, [("learner", 1, 1, 1)], [], [{"CPU": 1.0, "GPU": 1.0, "empo_learner": 1.0}]),
    ("sampler without own GPUs is colocated",
     {"replicas": 2, "gpusPerReplica": 0, "backend": "transformers"}, {"replicas": 1, "gpusPerReplica": 1},
     True, [("learner", 1, 1, 1)], [], [{"CPU": 1.0, "GPU": 1.0, "empo_learner": 1.0}]),
    ("2 nodes x 8 GPUs: a sampler pod of 8 TP=1 engines, a learner pod of 8 ranks (one per GPU)",
     {"replicas": 1, "gpusPerReplica": 8}, {"replicas": 1, "gpusPerReplica": 8, "sharding": "fsdp"},
     False, [("sampler", 1, 8, 8), ("learner", 1, 8, 8)],
     [{"CPU": 1.0, "GPU": 1.0, "empo_sampler": 1.0}] * 8, [{"CPU": 1.0, "GPU": 1.0, "empo_learner": 1.0}] * 8),
    ("3 nodes x 8 GPUs: two sampler pods of 4 TP=2 engines each, one 8-rank learner pod",
     {"replicas": 2, "gpusPerReplica": 8, "tensorParallelSize": 2}, {"replicas": 1, "gpusPerReplica": 8},
     False, [("sampler", 2, 8, 4), ("learner", 1, 8, 8)],
     [{"CPU": 1.0, "GPU": 2.0, "empo_sampler": 1.0}] * 8, [{"CPU": 1.0, "GPU": 1.0, "empo_learner": 1.0}] * 8),
    ("CPU only",
     {"replicas": 1, "gpusPerReplica": 0, "backend": "transformers"}, {"replicas": 2, "gpusPerReplica": 0},
     True, [("learner", 2, 0, 1)], [], [{"CPU": 1.0, "empo_learner": 1.0}] * 2),
    ("vLLM's CPU build: a sampler pod per engine, no GPUs anywhere",
     {"replicas": 2, "gpusPerReplica": 0, "backend": "vllm"}, {"replicas": 1, "gpusPerReplica": 0},
     False, [("sampler", 2, 0, 1), ("learner", 1, 0, 1)],
     [{"CPU": 1.0, "empo_sampler": 1.0}] * 2, [{"CPU": 1.0, "empo_learner": 1.0}]),
])
def test_plan(name, sampler, learner, colocated, groups, sampler_bundles, learner_bundles):
    plan = plan_placement(spec(sampler, learner))
    assert plan.colocated is colocated
    assert [(g.name, g.replicas, g.gpus_per_pod, g.bundles_per_pod) for g in plan.groups] == groups
    assert [b.to_ray() for b in plan.sampler_bundles] == sampler_bundles
    assert [b.to_ray() for b in plan.learner_bundles] == learner_bundles
    # The cluster holds the plan exactly: every pod's bundles, and no GPU left idle.
    for role, bundles in (("sampler", plan.sampler_bundles), ("learner", plan.learner_bundles)):
        g = plan.group(role)
        assert (g.replicas * g.bundles_per_pod if g else 0) == len(bundles)
        assert (g.gpus if g else 0) == sum(b.gpus for b in bundles)
    assert all((g.cpu, g.memory) == ("16", "128Gi") for g in plan.groups)


def test_total_gpus_of_the_three_node_plan():
    plan = plan_placement(spec({"replicas": 2, "gpusPerReplica": 8, "tensorParallelSize": 2},
                               {"replicas": 1, "gpusPerReplica": 8}))
    assert plan.total_gpus == 24 == sum(b.gpus for b in plan.sampler_bundles + plan.learner_bundles)
