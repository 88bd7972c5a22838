"""Sampler backends: the transformers sampler's contract, and vLLM failing clearly where it is absent."""

import sys

import pytest

from empo_api.models import EmpoRunSpec
from empo_trainer import model_source
from empo_trainer.sampling import SamplingParams, make_sampler
from empo_trainer.sampling.transformers_backend import TransformersSampler


def _spec(backend):
    return EmpoRunSpec.model_validate({"model": {"source": "bundled:tiny-random", "dtype": "float32"},
                                       "dataset": {"uri": "x.jsonl"}, "sampler": {"backend": backend}})


def test_vllm_backend_without_vllm_fails_with_a_clear_message(monkeypatch):
    import empo_trainer.sampling.vllm_backend as vllm_backend  # importable without vLLM

    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where it is not installed
    with pytest.raises(vllm_backend.VLLMUnavailable, match="spec.sampler.backend is 'vllm'.*backend: transformers"):
        make_sampler(_spec("vllm"), "unused")


@pytest.fixture(scope="module")
def tiny_sampler():
    return TransformersSampler(model_source.resolve(model_source.BUNDLED_TINY), max_prompt_length=32)


def test_n_samples_per_prompt_with_logprobs_and_eos_trimmed(tiny_sampler):
    prompts = ["one two three", [{"role": "user", "content": "hi"}]]
    out = tiny_sampler.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=0))
    assert len(out) == 2
    for gen in out:
        assert len(gen.completion_ids) == len(gen.texts) == len(gen.logprobs) == 3
        assert gen.finished == [ids[-1] in tiny_sampler.eos_ids for ids in gen.completion_ids]
        for ids, lps in zip(gen.completion_ids, gen.logprobs):
            assert 1 <= len(ids) <= 6 and len(lps) == len(ids)
            assert all(lp <= 0.0 for lp in lps)  # log-probabilities of the sampled tokens
            assert tiny_sampler.tokenizer.pad_token_id not in ids[:-1] or ids[-1] in tiny_sampler.eos_ids


def test_same_seed_same_samples_and_long_prompts_keep_their_end(tiny_sampler):
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=5, seed=7)
    a = tiny_sampler.generate(["a b c"], params)[0].completion_ids
    b = tiny_sampler.generate(["a b c"], params)[0].completion_ids
    assert a == b
    long_prompt = " ".join(f"w{i}" for i in range(200))
    gen = tiny_sampler.generate([long_prompt], SamplingParams(n=1, temperature=0.0, max_new_tokens=2))[0]
    assert len(gen.prompt_ids) == 32
    assert gen.prompt_ids == tiny_sampler.tokenizer(long_prompt)["input_ids"][-32:]
