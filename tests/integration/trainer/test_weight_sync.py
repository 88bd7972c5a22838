"""Remote sampler actors get the learner's weights through the Ray object store, or the run fails."""

import time
from types import SimpleNamespace

import pytest
import torch

from empo_api.models import EmpoRunSpec
from empo_trainer import model_source
from empo_trainer.actors import SamplerActor
from empo_trainer.rollout_engine import RolloutEngine
from empo_trainer.sampling import SamplingParams
from empo_trainer.sampling.transformers_backend import TransformersSampler

SPEC = EmpoRunSpec.model_validate({
    "model": {"source": "bundled:tiny-random", "dtype": "float32"}, "dataset": {"uri": "x.jsonl"},
    "algorithm": {"numGenerations": 2, "maxCompletionLength": 8, "promptsPerStep": 2},
    "sampler": {"backend": "transformers", "replicas": 1, "gpusPerReplica": 0},
})
PROMPTS = [[{"role": "user", "content": "What is 2 + 2?"}], [{"role": "user", "content": "Name a colour."}]]
GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=8)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()  # stops the GCS, raylet and workers this fixture started


def _trainer(model, step):
    return SimpleNamespace(model=model, state=SimpleNamespace(global_step=step))


def test_sync_makes_the_remote_sampler_generate_like_the_learner(ray_local):
    path = model_source.resolve(model_source.BUNDLED_TINY)
    learner_model = model_source.load_causal_lm(path)
    with torch.no_grad():  # a different policy than the one the sampler loaded
        for p in learner_model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    tokenizer = model_source.load_tokenizer(path)
    expected = [g.completion_ids for g in TransformersSampler.from_model(learner_model, tokenizer).generate(PROMPTS, GREEDY)]

    remote = ray_local.remote(num_cpus=0)(SamplerActor).remote(SPEC)
    before = [g.completion_ids for g in ray_local.get(remote.generate.remote(PROMPTS, GREEDY))]
    assert before != expected

    engine = RolloutEngine(SPEC, remote_samplers=[remote])
    engine.sync(_trainer(learner_model, 1))
    after = [g.completion_ids for g in ray_local.get(remote.generate.remote(PROMPTS, GREEDY))]
    assert after == expected
    assert engine.stats.sync_seconds > 0


class SlowSampler:
    def load_weights(self, state_dict):
        time.sleep(30)


def test_a_hung_sync_fails_the_attempt_instead_of_hanging(ray_local):
    slow = ray_local.remote(num_cpus=0)(SlowSampler).remote()
    engine = RolloutEngine(SPEC, remote_samplers=[slow], sync_timeout=1.0)
    model = torch.nn.Linear(2, 2)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="weight sync .* took longer than 1s"):
        engine.sync(_trainer(model, 3))
    assert time.monotonic() - started < 20
    ray_local.kill(slow)


class GpuEngine:
    """A sampler actor that says its vLLM engine runs on GPU-A and takes weights through the object store."""

    def __init__(self):
        self.loads = 0

    def device_uuids(self):
        return ["GPU-A"]

    def load_weights(self, named):
        self.loads += 1
        return True

    def weights_loaded(self):
        return True

    def count(self):
        return self.loads


GPU_SPEC = EmpoRunSpec.model_validate({
    "model": {"source": "bundled:tiny-random", "dtype": "float32"}, "dataset": {"uri": "x.jsonl"},
    "algorithm": {"numGenerations": 2, "maxCompletionLength": 8, "promptsPerStep": 2},
    "sampler": {"backend": "vllm", "replicas": 1, "gpusPerReplica": 1}, "learner": {"gpusPerReplica": 1},
})


def test_an_engine_on_the_learners_gpu_gets_weights_through_the_object_store(ray_local, monkeypatch):
    """A local run on one GPU puts the vLLM engine and the learner on the same device, where NCCL
    refuses two ranks; before, the sync went to NCCL all the same (and failed there)."""
    import empo_trainer.rollout_engine as learner_mod
    from empo_trainer.weight_sync import ObjectStoreSync

    monkeypatch.setattr(learner_mod, "_cuda_available", lambda: True)
    monkeypatch.setattr(learner_mod, "_learner_device_uuid", lambda: "GPU-A", raising=False)
    engine_actor = ray_local.remote(num_cpus=0)(GpuEngine).remote()
    engine = RolloutEngine(GPU_SPEC, remote_samplers=[engine_actor], sync_timeout=10.0)
    engine.sync(_trainer(torch.nn.Linear(2, 2), 1))
    assert isinstance(engine._weight_sync, ObjectStoreSync)
    assert ray_local.get(engine_actor.count.remote()) == 1


def test_the_first_sync_of_a_fresh_run_pushes_nothing(ray_local):
    """The engines loaded the checkpoint the learner starts from: at step 0 (not resumed) there is
    nothing to push (it cost about 12 s per start on a GPU); from step 1 on every sync pushes."""
    engine_actor = ray_local.remote(num_cpus=0)(GpuEngine).remote()
    engine = RolloutEngine(SPEC, remote_samplers=[engine_actor])
    model = torch.nn.Linear(2, 2)
    engine.sync(_trainer(model, 0))
    assert ray_local.get(engine_actor.count.remote()) == 0 and engine.stats.sync_bytes == 0
    engine.sync(_trainer(model, 1))
    assert ray_local.get(engine_actor.count.remote()) == 1 and engine.stats.sync_bytes > 0
