"""Pure parts of the learner: spec -> GRPOConfig, batch geometry, step records."""

import pytest
from pydantic import ValidationError
from trl import GRPOConfig

from empo_api.models import EmpoRunSpec
from empo_trainer.grpo_settings import SpecError, batch_geometry, grpo_config_kwargs, total_steps
from empo_trainer.rollout_engine import RolloutStats, _one_per_group
from empo_trainer.trainer_callback import step_record


def spec(**algorithm):
    learner = algorithm.pop("learner", {})
    return EmpoRunSpec.model_validate({"model": {"source": "x"}, "dataset": {"uri": "d.jsonl"},
                                       "algorithm": algorithm, "learner": learner, "sampler": {"replicas": 0}})


@pytest.mark.parametrize("algorithm,expected", [
    ({}, (784, 784, 1)),                                                  # paper: 112 prompts x G=7, one micro-batch
    ({"gradientAccumulation": 8}, (784, 98, 8)),
    ({"promptsPerStep": 4, "numGenerations": 4, "gradientAccumulation": 2}, (16, 8, 2)),
    ({"promptsPerStep": 8, "numGenerations": 8, "gradientAccumulation": 2, "learner": {"replicas": 4}}, (64, 8, 2)),
])
def test_batch_geometry(algorithm, expected):
    g = batch_geometry(spec(**algorithm))
    assert (g.completions_per_step, g.per_device_batch_size, g.gradient_accumulation) == expected


@pytest.mark.parametrize("algorithm,field", [
    ({"promptsPerStep": 3, "numGenerations": 3, "gradientAccumulation": 2}, "gradientAccumulation"),
    ({"promptsPerStep": 4, "numGenerations": 4, "learner": {"perDeviceBatchSize": 5}}, "perDeviceBatchSize"),
    ({"promptsPerStep": 3, "numGenerations": 4, "learner": {"replicas": 2}}, "whole groups of numGenerations"),
])
def test_impossible_batches_name_the_fields(algorithm, field):
    with pytest.raises(ValidationError, match=field):  # refused when the manifest is read
        spec(**algorithm)


def test_total_steps_from_epochs_or_steps():
    assert total_steps(spec(steps=7), 1000) == 7
    assert total_steps(spec(), 20000) == 358  # paper: 2 epochs over 20K prompts, 112 per step
    assert total_steps(spec(epochs=1.0, promptsPerStep=10), 25) == 3


@pytest.mark.parametrize("algorithm, learner, expected", [
    # (steps_per_generation, num_iterations, generation_batch_size) in TRL's terms
    ({}, {}, (1, 1, 784)),                                                   # paper era: on-policy
    ({"promptsPerStep": 32, "numGenerations": 16, "updatesPerGeneration": 8}, {}, (8, 1, 4096)),  # verl era
    ({"promptsPerStep": 32, "numGenerations": 16, "updatesPerGeneration": 8, "gradientAccumulation": 4},
     {}, (32, 1, 4096)),                                                     # TRL counts micro-batches
    ({"promptsPerStep": 4, "numGenerations": 4, "passesPerGeneration": 2}, {}, (1, 2, 16)),
])
def test_updates_per_generation_map_to_trl(tmp_path, algorithm, learner, expected):
    s = spec(**algorithm, learner=learner)
    assert s.learner.replicas == 1
    config = GRPOConfig(**grpo_config_kwargs(s, str(tmp_path), max_steps=5, use_cpu=True))
    # one generation serves updatesPerGeneration optimizer steps of promptsPerStep prompts each
    assert (config.steps_per_generation, config.num_iterations,
            config.per_device_train_batch_size * config.steps_per_generation) == expected


@pytest.mark.parametrize("algorithm, prompts, steps", [
    ({"promptsPerStep": 10, "epochs": 1.0}, 100, 10),
    ({"promptsPerStep": 10, "epochs": 1.0, "updatesPerGeneration": 5}, 100, 10),  # same data, fewer generations
    ({"promptsPerStep": 10, "epochs": 1.0, "passesPerGeneration": 2}, 100, 20),   # each generation used twice
])
def test_total_steps_count_optimizer_steps(algorithm, prompts, steps):
    assert total_steps(spec(**algorithm), prompts) == steps


def test_a_dataset_smaller_than_one_generation_names_the_fields():
    with pytest.raises(SpecError, match="promptsPerStep x algorithm.updatesPerGeneration = 32 x 8 = 256"):
        total_steps(spec(promptsPerStep=32, numGenerations=4, updatesPerGeneration=8), 200)


def test_grpo_config_reflects_the_spec(tmp_path):
    s = spec(loss="dr_grpo", importanceSamplingLevel="sequence", epsilon=3e-4, epsilonHigh=4e-4, beta=0.04,
             temperature=0.7, topP=0.95, learningRate=5e-7, numGenerations=4, promptsPerStep=4)
    kwargs = grpo_config_kwargs(s, str(tmp_path), max_steps=5, use_cpu=True)
    config = GRPOConfig(**kwargs)  # TRL accepts every argument we pass
    assert (config.loss_type, config.importance_sampling_level, config.epsilon, config.epsilon_high) == \
        ("dr_grpo", "sequence", 3e-4, 4e-4)
    assert (config.beta, config.temperature, config.top_p, config.learning_rate) == (0.04, 0.7, 0.95, 5e-7)
    assert config.num_generations == 4 and config.max_steps == 5 and config.num_iterations == 1
    assert config.lr_scheduler_type == "constant" and config.shuffle_dataset is False
    assert config.save_steps == s.storage.checkpoint_every


def test_one_per_group_collapses_trl_repeats():
    assert _one_per_group(["a", "a", "b", "b"], 2) == ["a", "b"]
    # TRL's rollout_func docstring promises no duplication; TRL 1.16 does not do it, and a TRL that did
    # would have every G-th prompt trained and the others lost
    with pytest.raises(RuntimeError, match="prompt 1 differs from prompt 0"):
        _one_per_group(["a", "b"], 2)


def test_step_record_renames_and_times():
    stats = RolloutStats(tokens=100, generation_seconds=4.0, sync_seconds=0.5, batch_digest="abc")
    record = step_record(3, {"reward": 0.5, "completions/mean_length": 12.0, "note": "x", "empo/clusters_mean": 2.0},
                         {"semantic_entropy": 0.7, "step": 2}, stats, 5.0)
    assert record["step"] == 3 and record["reward"] == 0.5 and record["completion_length"] == 12.0
    assert record["semantic_entropy"] == 0.7 and record["tokens_per_second"] == 25.0
    assert record["weight_sync_seconds"] == 0.5 and record["batch_digest"] == "abc" and "note" not in record
    assert "empo/clusters_mean" not in record
