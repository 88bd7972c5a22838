"""The GRPOTrainer subclass: the spec's advantage epsilon, and several updates per generation."""

from __future__ import annotations

import os

import pytest
import torch

from empo_api.models import EmpoRunSpec
from empo_trainer.grpo_trainer import trainer_class
from empo_trainer.grpo_settings import grpo_config_kwargs
from tests.unit.trainer.test_grpo_trainer import _formula


def _spec(**algorithm) -> EmpoRunSpec:
    return EmpoRunSpec.model_validate({"model": {"source": "bundled:tiny-random"}, "dataset": {"uri": "d.jsonl"},
                                       "algorithm": algorithm, "learner": {"gpusPerReplica": 0, "precision": "fp32",
                                                                           "gradientCheckpointing": False}})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    os.environ.setdefault("EMPO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from empo_trainer import model_source

    path = model_source.resolve("bundled:tiny-random")
    return path, model_source.load_tokenizer(path)


def _trainer(tiny, tmp_path, spec, steps, rewards, **config):
    """EmpoGRPOTrainer on the tiny model, fed by a rollout function that counts its calls, with a
    reward that returns the given values (cycled)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig

    path, tokenizer = tiny
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rollouts = []

    def rollout(prompts, trainer):
        rollouts.append(trainer.state.global_step)
        ids = tokenizer("The answer is", add_special_tokens=False)["input_ids"]
        return {"prompt_ids": [ids] * len(prompts), "completion_ids": [[17 + i % 5, 42, 7] for i in range(len(prompts))],
                "logprobs": [[-1.0, -1.0, -1.0]] * len(prompts)}

    def reward(prompts, completions, **kwargs):
        return [rewards[i % len(rewards)] for i in range(len(completions))]

    reward.last_stats = {}

    kwargs = grpo_config_kwargs(spec, str(tmp_path), max_steps=steps, use_cpu=True) | {"save_strategy": "no"} | config
    dataset = Dataset.from_list([{"prompt": f"question {i}"} for i in range(64)])
    trainer = trainer_class()(model=model, reward_funcs=[reward], args=GRPOConfig(**kwargs), train_dataset=dataset,
                              processing_class=tokenizer, rollout_func=rollout,
                              advantage_epsilon=spec.algorithm.advantage_epsilon)
    return trainer, rollouts, reward


@pytest.mark.slow
def test_trainer_scales_advantages_with_the_spec_epsilon(tiny, tmp_path):
    spec = _spec(numGenerations=4, promptsPerStep=2, advantageEpsilon=0.5)
    rewards = [1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5]
    trainer, _, _ = _trainer(tiny, tmp_path, spec, 1, rewards)
    trainer.model.train()
    out = trainer._generate_and_score_completions([{"prompt": "question 0"}] * 4 + [{"prompt": "question 1"}] * 4)
    assert out["advantages"].tolist() == pytest.approx(_formula(rewards, 4, 0.5), abs=1e-6)


@pytest.mark.slow
def test_several_updates_per_generation_clip_the_policy_ratio(tiny, tmp_path):
    # verl-era shape: one generation feeds 2 optimizer steps, with a tight sequence-level clip
    spec = _spec(numGenerations=4, promptsPerStep=2, updatesPerGeneration=2, importanceSamplingLevel="sequence",
                 epsilon=3e-4, epsilonHigh=4e-4, learningRate=1e-2, advantageEpsilon=1e-6)
    trainer, rollouts, reward = _trainer(tiny, tmp_path, spec, 4, [1.0, 0.0, 0.0, 1.0])
    from transformers import TrainerCallback

    logs = []

    class Keep(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            kept.append(dict(logs or {}))

    kept = logs
    trainer.add_callback(Keep())
    from empo_trainer.rollout_engine import RolloutEngine
    from empo_trainer.trainer_callback import make_callback

    records = []
    def emit(event):
        if event["type"] == "step":
            records.append(event["record"])

    trainer.add_callback(make_callback(emit, reward, RolloutEngine(spec),
                                       lambda step, folder: "", None, 0))
    trainer.train()
    assert rollouts == [0, 2]  # a generation every 2 optimizer steps, not every step
    # metrics.jsonl gets a complete line per optimizer step, marked when it carries a new rollout
    assert [(r["step"], r["new_rollout"]) for r in records] == [(1, True), (2, False), (3, True), (4, False)]
    assert all("reward" in r and "loss" in r for r in records)
    clipped = [entry.get("clip_ratio/region_mean") for entry in logs if "loss" in entry]
    assert len(clipped) == 4
    # the first update of a generation is on-policy (ratio 1); later ones move the policy past the clip
    assert clipped[0] == 0.0 and max(clipped[1], clipped[3]) > 0.0


@pytest.mark.slow
@pytest.mark.parametrize("stop_at, commits", [(2, [2]), (3, [2, 3])], ids=["on-a-checkpoint-step", "between"])
def test_a_stop_request_ends_training_after_its_step_with_that_step_committed_once(tiny, tmp_path, stop_at, commits):
    # preemption (issue 24): asked to stop during step `stop_at`, the learner logs that step, commits
    # it (once, also when checkpointEvery=2 already saves it) and trains no further step
    spec = _spec(numGenerations=4, promptsPerStep=2)
    trainer, _, reward = _trainer(tiny, tmp_path, spec, 6, [1.0, 0.0], save_strategy="steps", save_steps=2)
    from empo_trainer.rollout_engine import RolloutEngine
    from empo_trainer.trainer_callback import make_callback

    records, committed = [], []

    def emit(event):
        if event["type"] == "step":
            records.append(event["record"]["step"])

    def commit(step, folder):
        committed.append(step)
        assert folder.is_dir()
        return f"mem://step-{step}"

    callback = make_callback(emit, reward, RolloutEngine(spec), commit, None, 0,
                             should_stop=lambda: trainer.state.global_step >= stop_at)
    trainer.add_callback(callback)
    trainer.train()
    assert (callback.stopped_at, trainer.state.global_step) == (stop_at, stop_at)
    assert records == list(range(1, stop_at + 1))  # every step's metrics line, the stopped one included
    assert committed == commits
