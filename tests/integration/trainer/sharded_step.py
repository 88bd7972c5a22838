"""One learner optimizer step on a fixed batch, as one of N torch.distributed processes.

Run by test_sharding.py: once alone (sharding none) and as two processes (sharding fsdp) with
MASTER_ADDR/RANK/WORLD_SIZE set the way the driver sets them. The rollout is fixed (each prompt's
completions depend only on the prompt), so both runs see the same batch and any difference comes
from how the step is computed. Rank 0 writes the step's logs and the full weights after the step,
gathered through iter_full_weights (the sync path to the samplers).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

G = 4


def spec_for(sharding: str, ranks: int, lr: float):
    from empo_api.models import EmpoRunSpec

    return EmpoRunSpec.model_validate({
        "model": {"source": "bundled:tiny-random", "dtype": "bfloat16"},
        "dataset": {"uri": "d.jsonl"},
        "algorithm": {"numGenerations": G, "promptsPerStep": 2, "maxCompletionLength": 4, "learningRate": lr},
        "sampler": {"backend": "transformers", "replicas": ranks, "gpusPerReplica": 1},
        "learner": {"replicas": ranks, "gpusPerReplica": 0, "sharding": sharding, "precision": "bf16",
                    "gradientCheckpointing": True},
    })


def rollout(prompts, trainer):
    out = {"prompt_ids": [], "completion_ids": [], "logprobs": []}
    for i, prompt in enumerate(prompts):
        h = sum(map(ord, str(prompt)))
        out["prompt_ids"].append([1, 2, 3 + h % 11])
        out["completion_ids"].append([5 + h % 50, 7 + i % G, 11 + h % 7, 13])
        out["logprobs"].append([-1.0] * 4)
    return out


def reward(prompts, completions, completion_ids, **kwargs):
    return [float(sum(c) % 5) for c in completion_ids]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--sharding", default="none")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--bf16", action="store_true", help="bf16 compute (what learner.precision bf16 gives on GPUs)")
    parser.add_argument("--save", action="store_true", help="write the step's checkpoint under OUT/trainer")
    args = parser.parse_args()
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from empo_trainer import model_source
    from empo_trainer.distributed import prepare
    from empo_trainer.grpo_settings import grpo_config_kwargs
    from empo_trainer.learner_weights import is_sharded, iter_full_weights, local_numel

    world = int(os.environ.get("WORLD_SIZE", "1"))
    spec = spec_for(args.sharding, world, args.lr)
    path = model_source.resolve("bundled:tiny-random")
    torch.manual_seed(0)
    model = model_source.load_causal_lm(path, "float32")  # the learner's fp32 master weights
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    kwargs = grpo_config_kwargs(spec, os.path.join(args.out, "trainer"), max_steps=1, use_cpu=True)
    # --save: the step's checkpoint, as the learner commits it (HF Trainer's FSDP full state dict)
    kwargs.update(save_strategy="steps" if args.save else "no", save_steps=1, bf16=args.bf16)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=GRPOConfig(**kwargs),
                          train_dataset=Dataset.from_list([{"prompt": f"question {i}"} for i in range(8)]),
                          processing_class=model_source.load_tokenizer(path), rollout_func=rollout)
    prepare(trainer)
    trainer.train()
    rank = int(os.environ.get("RANK", "0"))
    numel = {"rank": rank, "local": local_numel(trainer), "sharded": is_sharded(trainer),
             "dtypes": sorted({str(p.dtype) for p in trainer.model.parameters()})}
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump(numel, f)
    weights = dict(iter_full_weights(trainer))  # every rank drives the gathers; rank 0 receives
    if rank == 0:
        log = next(r for r in trainer.state.log_history if "grad_norm" in r)
        torch.save({"before": before, "after": weights, "log": log}, os.path.join(args.out, "step.pt"))
    else:
        assert weights == {}, "only rank 0 receives the gathered weights"


if __name__ == "__main__":
    main()
