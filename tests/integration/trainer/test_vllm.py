"""The real vLLM sampler (vLLM's CPU build): generation, log-probs, seeds, and weights synced from a learner.

One engine serves every in-process test (an engine takes about a minute to start on CPU); the
last test trains 3 steps with `sampler.backend: vllm` through Ray, as a user would.
"""

import json
from types import SimpleNamespace

import pytest
import torch
import yaml

from empo_trainer import model_source
from empo_trainer.learner_weights import iter_full_weights
from empo_trainer.sampling import SamplingParams
from empo_trainer.sampling.chat import render_prompt_ids

from .conftest import REPO, empo

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "What is 2 + 2?"}]


def build_tiny_for_vllm(dest):
    """The bundled tiny model's shape with head_dim 32: vLLM's CPU attention has no kernel for 16."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(model_source.resolve(model_source.BUNDLED_TINY))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return str(dest)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_for_vllm(tmp_path_factory.mktemp("tiny-vllm"))


@pytest.fixture(scope="module")
def sampler(tiny_path):
    from empo_trainer.sampling.vllm_backend import VLLMSampler

    engine = VLLMSampler(tiny_path, dtype="float32", max_prompt_length=64, max_model_len=128,
                         gpu_memory_utilization=0.05, seed=0)
    yield engine
    engine.llm.llm_engine.engine_core.shutdown()  # the engine-core and worker processes


def learner_logprobs(model, prompt_ids, completion, temperature=1.0):
    """The learner's log-probs of a completion's tokens, as TRL recomputes them."""
    ids = torch.tensor([prompt_ids + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1:-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None])[:, 0]


def test_generates_n_samples_with_logprobs_finished_and_chat_template(sampler):
    out = sampler.generate(["one two three", CHAT], SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=1))
    eos = sampler.tokenizer.eos_token_id
    assert out[1].prompt_ids == render_prompt_ids(sampler.tokenizer, CHAT)  # the chat template was applied
    assert sampler.tokenizer.decode(out[1].prompt_ids).startswith("<|im_start|>")
    for gen in out:
        assert len(gen.completion_ids) == len(gen.logprobs) == len(gen.texts) == len(gen.finished) == 3
        for ids, lps, finished in zip(gen.completion_ids, gen.logprobs, gen.finished):
            assert 1 <= len(ids) <= 6 and len(lps) == len(ids) and all(lp <= 0.0 for lp in lps)
            assert finished == (ids[-1] == eos)  # ended on EOS, not cut at the token limit


def test_each_prompt_draws_from_its_own_seed(sampler):
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=5)
    first = [g.completion_ids for g in sampler.generate(["a b c", "a b c"], params)]
    again = [g.completion_ids for g in sampler.generate(["a b c", "a b c"], params)]
    assert first == again  # reproducible
    assert first[0] != first[1]  # one seed per prompt: the same question twice is sampled twice


def test_no_sample_reuses_another_prompts_stream(sampler):
    # vLLM seeds sample j of a request with seed + j: prompt seeds one apart made sample 1 of
    # prompt 0 the very same draw as sample 0 of prompt 1 (the same question twice showed it)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=5)
    out = [g.completion_ids for g in sampler.generate(["a b c", "a b c"], params)]
    assert out[0][1] != out[1][0]
    old_seeds = [g.completion_ids for g in sampler.generate(["a b c", "a b c"], SamplingParams(
        n=2, temperature=1.0, max_new_tokens=8, prompt_seeds=(11, 12)))]
    assert old_seeds[0][1] == old_seeds[1][0]  # what the engine does with seeds one apart


def test_a_seeded_batch_over_the_token_budget_is_sampled(sampler):
    # An evaluation's batch: many prompts, n samples each, one seed per prompt. Over the engine's
    # token budget a chunked prefill used to kill the CPU engine (its generators cannot rewind).
    from empo_trainer.sampling.vllm_backend import CPU_BATCHED_TOKENS

    prompts = [f"question {i}: " + "one two three four five six seven eight " * 6 for i in range(40)]
    lengths = [len(render_prompt_ids(sampler.tokenizer, p, 64)) for p in prompts]
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=4, seed=3)
    assert sum(lengths) * params.n > CPU_BATCHED_TOKENS  # more than one scheduler step's prefill
    out = sampler.generate(prompts, params)
    assert [len(g.completion_ids) for g in out] == [4] * len(prompts)
    assert all(len(ids) >= 1 for g in out for ids in g.completion_ids)


def test_synced_weights_give_the_learners_logprobs(sampler, tiny_path):
    learner = model_source.load_causal_lm(tiny_path)
    prompt = render_prompt_ids(sampler.tokenizer, CHAT)
    with torch.no_grad():  # an optimizer step's worth of change, and more
        for p in learner.parameters():
            p.add_(torch.randn_like(p) * 0.3)

    def sampled(temperature):
        gen = sampler.generate([CHAT], SamplingParams(n=2, temperature=temperature, max_new_tokens=12, seed=3))[0]
        return [(ids, torch.tensor(lps)) for ids, lps in zip(gen.completion_ids, gen.logprobs)]

    stale = sampled(1.0)
    assert max((lps - learner_logprobs(learner, prompt, ids)).abs().max().item() for ids, lps in stale) > 0.1

    sampler.load_weights(iter_full_weights(SimpleNamespace(model=learner)))  # as RolloutEngine.sync does
    sampler.weights_loaded()
    for temperature in (1.0, 0.7):  # processed log-probs: after temperature, what the token was drawn from
        for ids, lps in sampled(temperature):
            expected = learner_logprobs(learner, prompt, ids, temperature)
            assert torch.allclose(lps, expected, atol=2e-3), (lps, expected)


def test_three_steps_with_vllm_samplers_through_ray(tmp_path, empo_env):
    """One-step-off (sampler.maxStaleness 1, the default) for real: two steps per epoch, so step 2
    trains on samples the engine drew with step 0's weights while the learner made update 1, and
    step 3 (a new epoch: nothing to read ahead) samples after a weight sync, as a synchronous run.
    The demo's model and questions: a random model's samples never agree, every advantage is 0 and
    no update moves the weights, so a stale engine would not show."""
    doc = yaml.safe_load((REPO / "examples/local-cpu.yaml").read_text())
    doc["metadata"]["name"] = "tiny-smoke"
    spec = doc["spec"]
    spec["dataset"].update(uri=str(REPO / spec["dataset"]["uri"]), limit=8)  # 2 steps an epoch
    spec["sampler"].update(backend="vllm", replicas=1, gpuMemoryUtilization=0.05)
    spec["eval"] = {"benchmarks": []}
    spec["algorithm"].update(learningRate=1e-3, maxCompletionLength=8)  # updates that move the log-probs
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    result = empo(["train", tmp_path / "run.yaml", "--output", out, "--steps", 3, "--no-progress"], empo_env,
                  timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads(line) for line in (out / "default/tiny-smoke/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    # the generating policy (the learner step whose weights sampled the rollout) is at most
    # maxStaleness = 1 step behind the learner that trains on it
    assert [(r["policy_version"], r["staleness"]) for r in records] == [(0, 0), (0, 1), (2, 0)]
    first, stale, synced = records
    assert first["grad_norm"] > 0, first  # update 1 moved the weights
    # a fresh run's first rollout: the engine already holds the learner's start weights; step 3's
    # rollout waited for update 2's weights (step 2's sync was skipped: nothing to read ahead)
    assert first["weight_sync_gib"] == 0 and first["weight_sync_seconds"] == 0
    assert synced["weight_sync_gib"] > 0 and synced["weight_sync_seconds"] > 0
    for r in (first, synced):  # the sampler scored its tokens with the learner's weights: TRL's recomputation agrees
        assert r["sampling/sampling_logp_difference/mean"] < 0.01, r
        assert 0.9 < r["sampling/importance_sampling_ratio/mean"] < 1.1, r
    # step 2's log-probs are the generating policy's (step 0's), not the learner's (step 1's): TRL's
    # importance ratio pi_1 / pi_0 is what corrects the lag (a ratio of 1 would mean it divided by
    # the learner's own log-probs)
    assert stale["sampling/sampling_logp_difference/mean"] > 0.01, stale
    ratio = stale["sampling/importance_sampling_ratio/min"], stale["sampling/importance_sampling_ratio/max"]
    assert ratio[0] < 0.99 or ratio[1] > 1.01, stale
