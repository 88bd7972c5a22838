"""One process per GPU, sharding and the refusals that replace silent fallbacks (pure parts)."""

import pytest
from pydantic import ValidationError
from trl import GRPOConfig

from empo_api.models import EmpoRunSpec
from empo_trainer.distributed import (DeviceError, fsdp_kwargs, learner_uses_cpu, node_local_ranks,
                                      rank_environment)
from empo_trainer.grpo_settings import grpo_config_kwargs


def spec(sampler=None, **learner):
    return EmpoRunSpec.model_validate({
        "model": {"source": "m"}, "dataset": {"uri": "d.jsonl"},
        "algorithm": {"promptsPerStep": 8, "numGenerations": 4},
        "sampler": sampler or {"replicas": 1, "gpusPerReplica": 8}, "learner": learner})


@pytest.mark.parametrize("learner, expected", [
    ({"replicas": 1, "gpusPerReplica": 8, "sharding": "none"}, None),
    ({"replicas": 1, "gpusPerReplica": 1, "sharding": "fsdp"}, None),  # one process: nothing to shard over
    ({"replicas": 1, "gpusPerReplica": 8, "sharding": "fsdp"}, (True, True)),
    ({"replicas": 2, "gpusPerReplica": 4, "sharding": "zero3"}, (True, True)),  # zero3 = FSDP2 full shard
    ({"replicas": 1, "gpusPerReplica": 8, "sharding": "zero2"}, (False, True)),
    ({"replicas": 1, "gpusPerReplica": 8, "sharding": "fsdp", "gradientCheckpointing": False}, (True, False)),
])
def test_sharding_reaches_trainingarguments_as_fsdp2(tmp_path, learner, expected):
    s = spec(**learner)
    config = GRPOConfig(**grpo_config_kwargs(s, str(tmp_path), max_steps=1, use_cpu=True))
    if expected is None:
        assert not fsdp_kwargs(s) and not config.fsdp and config.fsdp_plugin_args is None
        return
    reshard, checkpointing = expected
    plugin = config.fsdp_plugin_args  # what HF Trainer hands accelerate's FullyShardedDataParallelPlugin
    assert plugin["fsdp_version"] == 2 and plugin["reshard_after_forward"] is reshard
    assert plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    # FSDP checkpoints activations itself; HF's gradient checkpointing would all-gather twice
    assert plugin.get("activation_checkpointing", False) is checkpointing and config.gradient_checkpointing is False


def test_bf16_compute_on_gpus_and_fp32_master_weights(tmp_path):
    s = spec(replicas=1, gpusPerReplica=8, sharding="fsdp")
    gpu = grpo_config_kwargs(s, str(tmp_path), max_steps=1, use_cpu=False)
    assert gpu["bf16"] is True and not gpu["fp16"]  # mixed precision: accelerate keeps params fp32, computes bf16
    assert grpo_config_kwargs(s, str(tmp_path), max_steps=1, use_cpu=True)["bf16"] is False


def test_a_learner_that_asked_for_gpus_and_sees_none_fails_with_the_reason():
    assert learner_uses_cpu(spec(replicas=1, gpusPerReplica=0, sampler={"replicas": 0}), 0, None) is True
    assert learner_uses_cpu(spec(replicas=1, gpusPerReplica=1), 1, "3") is False
    with pytest.raises(DeviceError) as err:
        learner_uses_cpu(spec(replicas=1, gpusPerReplica=1), 0, "")
    message = str(err.value)
    assert "learner.gpusPerReplica is 1" in message and "CUDA_VISIBLE_DEVICES=''" in message
    assert "gpusPerReplica to 0" in message  # and what to change


@pytest.mark.parametrize("devices, expected", [
    # two 4-GPU pods, Ray gave each actor one GPU: every rank sees its node's learner GPUs
    ([("10.0.0.1", ["0"]), ("10.0.0.1", ["1"]), ("10.0.0.2", ["2"]), ("10.0.0.2", ["3"])],
     [("0,1", 0, 2), ("0,1", 1, 2), ("2,3", 0, 2), ("2,3", 1, 2)]),
    # ids sort as numbers, whatever order the ranks came in
    ([("n", ["10"]), ("n", ["2"]), ("n", ["9"])], [("2,9,10", 2, 3), ("2,9,10", 0, 3), ("2,9,10", 1, 3)]),
    # CPU learners: environment untouched, local rank among the node's learners
    ([("127.0.0.1", []), ("127.0.0.1", [])], [("", 0, 2), ("", 1, 2)]),
    ([("a", []), ("b", [])], [("", 0, 1), ("", 0, 1)]),
])
def test_one_process_per_gpu_local_ranks(devices, expected):
    assert node_local_ranks(devices) == expected


def test_rank_environment():
    env = rank_environment("10.0.0.1:29500", 3, 8, "0,1,2,3", 3, 4)
    assert env == {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "RANK": "3", "WORLD_SIZE": "8",
                   "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    assert "CUDA_VISIBLE_DEVICES" not in rank_environment("h:1", 0, 2, "", 0, 2)


@pytest.mark.parametrize("sampler, learner, words", [
    ({"replicas": 1, "gpusPerReplica": 1}, {"replicas": 2, "gpusPerReplica": 1},
     "sampler engines (1 = sampler.replicas 1 x gpusPerReplica 1 / tensorParallelSize 1) must be at least the "
     "learner processes (2 = learner.replicas 2 x gpusPerReplica 1)"),
    ({"replicas": 2, "gpusPerReplica": 4, "tensorParallelSize": 4}, {"replicas": 1, "gpusPerReplica": 8},
     "sampler engines (2 = "),
    ({"replicas": 0}, {"replicas": 1, "gpusPerReplica": 8, "sharding": "fsdp"},
     "learner.sharding fsdp needs sampler engines of their own"),
])
def test_samplers_that_cannot_feed_the_learners_are_refused(sampler, learner, words):
    with pytest.raises(ValidationError) as err:
        spec(sampler, **learner)
    assert words in str(err.value)


def test_enough_engines_or_colocated_generation_pass():
    assert spec({"replicas": 2, "gpusPerReplica": 8, "tensorParallelSize": 2}, replicas=1, gpusPerReplica=8)
    assert spec({"replicas": 0}, replicas=1, gpusPerReplica=8)  # DDP learners generate on their own GPUs


def test_empo_validate_refuses_a_spec_whose_samplers_cannot_feed_its_learners():
    from empo_api.validate import validate_manifest

    manifest = {"apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun", "metadata": {"name": "r", "namespace": "ns"},
                "spec": {"model": {"source": "m"}, "dataset": {"uri": "s3://data/d.jsonl"},
                         "sampler": {"replicas": 1}, "learner": {"replicas": 1, "gpusPerReplica": 4}}}
    (error,) = validate_manifest(manifest)
    assert error.path == "spec" and "must be at least the learner processes (4 = " in error.message
    manifest["spec"]["sampler"]["gpusPerReplica"] = 4  # four TP=1 engines in the sampler pod
    assert validate_manifest(manifest) == []
