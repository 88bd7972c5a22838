"""One-step-off training (sampler.maxStaleness): engines of their own sample generation n+1 while the
learner updates on generation n.

Here with a real local Ray and a real sampler actor (the transformers backend on the bundled tiny
model, seconds): each rollout is compared, completion by completion and log-prob by log-prob, with
what a sampler holding exactly the weights of the expected learner step produces. With staleness 1
a step's samples and log-probs are the previous step's policy's (the ones TRL's importance ratio
divides by); with staleness 0 they are the current policy's, as before one-step-off existed. The
real vLLM engine does it through `empo train` in test_vllm.py."""

import copy
from types import SimpleNamespace

import pytest
import torch

from empo_api.models import EmpoRunSpec
from empo_trainer import model_source
from empo_trainer.actors import SamplerActor
from empo_trainer.rollout_engine import RolloutEngine
from empo_trainer.sampling import SamplingParams, stream_seed
from empo_trainer.sampling.transformers_backend import TransformersSampler

from .test_grpo import _spec as _grpo_spec
from .test_grpo import _trainer as _grpo_trainer
from .test_grpo import tiny  # noqa: F401  (fixture)
from .test_weight_sync import ray_local  # noqa: F401  (fixture)

G = 2
PROMPTS = [[[{"role": "user", "content": f"What is {i} + {j}?"}] for j in range(2)] for i in range(4)]


def _spec(staleness: int) -> EmpoRunSpec:
    return EmpoRunSpec.model_validate({
        "model": {"source": "bundled:tiny-random", "dtype": "float32"}, "dataset": {"uri": "x.jsonl"},
        "algorithm": {"numGenerations": G, "maxCompletionLength": 6, "promptsPerStep": 2, "temperature": 1.0},
        "sampler": {"backend": "transformers", "replicas": 1, "gpusPerReplica": 0, "maxStaleness": staleness}})


def _policies(steps: int) -> list[torch.nn.Module]:
    """theta_0 (the checkpoint the engine loads) and the learner after each of `steps` updates."""
    model = model_source.load_causal_lm(model_source.resolve(model_source.BUNDLED_TINY))
    out = [copy.deepcopy(model)]
    torch.manual_seed(0)
    for _ in range(steps):
        with torch.no_grad():  # far more than one optimizer step: a stale sample must show
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.5)
        out.append(copy.deepcopy(model))
    return out


def _expected(policy, spec: EmpoRunSpec, step: int, prompts):
    """What a sampler holding exactly `policy` samples for the rollout of `step`."""
    tokenizer = model_source.load_tokenizer(model_source.resolve(model_source.BUNDLED_TINY))
    a = spec.algorithm
    params = SamplingParams(n=G, temperature=a.temperature, top_p=a.top_p, max_new_tokens=a.max_completion_length,
                            seed=stream_seed(a.seed, step, 0))
    return TransformersSampler.from_model(policy, tokenizer, a.max_prompt_length).generate(prompts, params)


def _as_trl_passes(prompts):
    """TRL's sampler repeats every prompt G times in a row (the engine samples each once, n=G)."""
    return [p for p in prompts for _ in range(G)]


def _rollouts(actor, spec: EmpoRunSpec, policies, fresh_engine: bool):
    """Drive a RolloutEngine as TRL would: at step s the learner holds policies[s], the trainer
    peeked the next step's prompts; returns each step's output and the engine's stats."""
    engine = RolloutEngine(spec, remote_samplers=[actor])
    engine.engines_hold_initial_weights = fresh_engine  # else step 0 pushes policies[0] first
    steps = len(policies)
    out = []
    for s in range(steps):
        trainer = SimpleNamespace(
            model=policies[s], state=SimpleNamespace(global_step=s, max_steps=steps), args=None,
            next_generation_prompts=_as_trl_passes(PROMPTS[s + 1]) if s + 1 < steps else None)
        result = engine(_as_trl_passes(PROMPTS[s]), trainer)
        out.append((result, engine.stats.policy_version, engine.stats.staleness))
    return out


def _same(result, generations):
    ids = [c for g in generations for c in g.completion_ids]
    logprobs = [lp for g in generations for lp in g.logprobs]
    assert result["completion_ids"] == ids
    for got, want in zip(result["logprobs"], logprobs):
        assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-4)


def test_each_rollout_comes_from_the_policy_its_staleness_allows(ray_local):  # noqa: F811
    policies = _policies(3)
    actor = ray_local.remote(num_cpus=0)(SamplerActor).remote(_spec(1))
    for staleness in (1, 0):  # one engine for both (an actor takes long to start on a busy machine)
        spec = _spec(staleness)
        got = _rollouts(actor, spec, policies, fresh_engine=staleness == 1)
        for step, (result, version, lag) in enumerate(got):
            # staleness 1: the first step's samples were drawn synchronously (nothing to overlap
            # yet), every later one while the learner made the update before it; staleness 0: every
            # one by the learner's current policy, as before one-step-off existed
            want = step if staleness == 0 or step == 0 else step - 1
            assert (version, lag) == (want, step - want)
            _same(result, _expected(policies[want], spec, step, PROMPTS[step]))
            if want != step:  # and not what the current policy would have sampled
                fresh = _expected(policies[step], spec, step, PROMPTS[step])
                assert result["completion_ids"] != [c for g in fresh for c in g.completion_ids]


def test_trainer_reads_the_next_generations_prompts_ahead(tiny, tmp_path):  # noqa: F811
    """EmpoGRPOTrainer with lookahead: when a step starts a generation, the prompts TRL will pass to
    the next rollout are known (None at an epoch's end, where one-step-off pauses for a step)."""
    from datasets import Dataset

    spec = _grpo_spec(numGenerations=2, promptsPerStep=2, updatesPerGeneration=2)
    trainer, _, _ = _grpo_trainer(tiny, tmp_path, spec, 6, [1.0, 0.0])
    trainer.train_dataset = Dataset.from_list([{"prompt": f"question {i}"} for i in range(8)])  # 2 generations
    trainer.lookahead = True
    seen = []
    original = trainer.rollout_func

    def recording(prompts, trainer_):
        seen.append((trainer_.state.global_step, list(prompts), trainer_.next_generation_prompts))
        return original(prompts, trainer_)

    trainer.rollout_func = recording
    trainer.train()
    assert [s for s, _, _ in seen] == [0, 2, 4]  # a rollout every updatesPerGeneration steps
    for (_, _, ahead), (_, prompts, _) in zip(seen, seen[1:]):
        if ahead is not None:
            assert ahead == prompts
    assert [ahead is None for _, _, ahead in seen] == [False, True, False]  # epoch 1 ends after step 4
