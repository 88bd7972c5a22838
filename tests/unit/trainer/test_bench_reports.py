"""The benchmarks report what they measured: the learner's real dtype and the sharding that ran."""

import sys
from types import SimpleNamespace

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))


def test_bench_learner_reports_unsharded_when_it_ran_unsharded():
    import bench_learner

    args = SimpleNamespace(model="bundled:tiny-random", sharding="fsdp", micro=2, prompt_tokens=8,
                           completion_tokens=8)
    rank = {"step_seconds": [1.0], "masters": ["torch.float32"], "sharded": False, "peak_gpu_gib": None,
            "device": "cpu", "params": 10}
    summary = bench_learner.summarize(args, 1, [rank], gpu=False)  # one process: FSDP needs a group
    assert summary["sharding"] == "none" and summary["requested_sharding"] == "fsdp"
    assert bench_learner.summarize(args, 2, [dict(rank, sharded=True)] * 2, gpu=False)["sharding"] == "fsdp"


class Loaded(Exception):
    pass


def test_bench_train_gpu_loads_fp32_masters_like_the_learner(monkeypatch):
    import bench_train

    from empo_trainer import model_source

    seen = []

    def load(path, dtype="float32", *args, **kwargs):
        seen.append(dtype)
        raise Loaded

    monkeypatch.setattr(model_source, "load_causal_lm", load)
    with pytest.raises(Loaded):
        bench_train.run_variant("empo", "bundled:tiny-random", 1, 2, 2, 4, gpu=True)
    assert seen == ["float32"]  # before: bfloat16, so --gpu did not measure the real learner
