"""Random streams of rollouts: every sample of every prompt on every learner rank draws its own.

vLLM seeds sample j of a request with seed+j (its parallel sampling), so prompt seeds must be
spaced by at least n; data-parallel learners each sample their own prompts, so the rank must be
part of the seed. These tests compare individual samples, not whole lists."""

from types import SimpleNamespace

import pytest

from empo_api.models import EmpoRunSpec
from empo_trainer import model_source
from empo_trainer.rollout_engine import RolloutEngine
from empo_trainer.sampling import SamplingParams, prompt_seeds
from empo_trainer.sampling.transformers_backend import TransformersSampler

CHAT = [{"role": "user", "content": "What is 2 + 2?"}]


def sample_streams(params, count):
    """The seed each sample draws from: vLLM gives sample j of a request seeded s the seed s + j."""
    return [seed + j for seed in prompt_seeds(params, count) for j in range(params.n)]


@pytest.mark.parametrize("n", [2, 7, 16])
def test_no_two_samples_of_a_batch_share_a_stream(n):
    streams = sample_streams(SamplingParams(n=n, seed=5), 64)
    assert len(set(streams)) == len(streams)


def _spec(**algorithm):
    return EmpoRunSpec.model_validate({
        "model": {"source": "bundled:tiny-random", "dtype": "float32"}, "dataset": {"uri": "x.jsonl"},
        "algorithm": {"numGenerations": 2, "promptsPerStep": 2, "maxCompletionLength": 8, **algorithm},
        "sampler": {"backend": "transformers", "replicas": 0}})


class Recorder:
    def __init__(self, inner=None):
        self.inner, self.params = inner, []

    def generate(self, prompts, params):
        self.params.append(params)
        if self.inner is not None:
            return self.inner.generate(prompts, params)
        from empo_trainer.sampling import Generation

        return [Generation([1], [[2]] * params.n, ["x"] * params.n, [[-0.1]] * params.n, [True] * params.n)
                for _ in prompts]


def _trainer(step, rank, world=2):
    return SimpleNamespace(state=SimpleNamespace(global_step=step),
                           accelerator=SimpleNamespace(process_index=rank, num_processes=world))


def test_learner_ranks_and_steps_draw_disjoint_streams():
    spec = _spec()
    streams = {}
    for step in (0, 1):
        for rank in (0, 1):
            recorder = Recorder()
            RolloutEngine(spec, local_sampler=recorder)([CHAT, CHAT, CHAT, CHAT], _trainer(step, rank))
            streams[step, rank] = sample_streams(recorder.params[0], 2)
    every = [s for ss in streams.values() for s in ss]
    assert len(set(every)) == len(every), streams


@pytest.fixture(scope="module")
def tiny_sampler():
    return TransformersSampler(model_source.resolve(model_source.BUNDLED_TINY), max_prompt_length=32)


def test_the_same_prompt_on_two_ranks_gets_different_samples(tiny_sampler):
    """Rank 0 and rank 1 both sample the same question at step 0: each sample differs from the other
    rank's sample at the same place (before: identical, one seed for every rank)."""
    spec = _spec(maxCompletionLength=12, temperature=1.0)
    out = [RolloutEngine(spec, local_sampler=tiny_sampler)([CHAT, CHAT], _trainer(0, rank))["completion_ids"]
           for rank in (0, 1)]
    again = RolloutEngine(spec, local_sampler=tiny_sampler)([CHAT, CHAT], _trainer(0, 0))["completion_ids"]
    assert again == out[0]  # reproducible
    for j in range(2):
        assert out[0][j] != out[1][j], (j, out)
