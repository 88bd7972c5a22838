"""EMPO step time against TRL's GRPOTrainer with a trivial reward, same model and settings.

Both variants run TRL's GRPOTrainer with the config our learner derives from the spec; they differ
only in what EMPO adds: completions come through our rollout function (the transformers sampler)
and rewards from the EMPO engine (extraction, clustering, entropy, filter) instead of TRL's own
generate and a constant-time reward. Each variant runs in its own process so peak RSS is its own.

    python benchmarks/bench_train.py [--model bundled:smollm2-135m-instruct] [--steps 4]

Prints mean step time, tokens/s and peak RSS per variant and the ratio (target <= 1.05), and
writes benchmarks/results/train.json. With --gpu it then runs benchmarks/bench_learner.py: the real
learner (one process per GPU, FSDP2, bf16 compute, fp32 master weights) with tokens/s, MFU and
peak GPU memory against `empo plan`'s estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _spec(model: str, prompts: int, generations: int, tokens: int, gpu: bool = False):
    from empo_api.models import EmpoRunSpec

    return EmpoRunSpec.model_validate({
        "model": {"source": model, "dtype": "float32"},
        "dataset": {"uri": str(REPO / "data/local/arith-train.jsonl"), "questionField": "question",
                    "answerField": "answer", "limit": 64},
        "algorithm": {"numGenerations": generations, "promptsPerStep": prompts, "maxCompletionLength": tokens,
                      "maxPromptLength": 256, "learningRate": 1e-6, "temperature": 0.9},
        "sampler": {"backend": "transformers", "gpusPerReplica": 0},
        "learner": {"gpusPerReplica": 1 if gpu else 0, "precision": "bf16" if gpu else "fp32",
                    "gradientCheckpointing": False},
        "storage": {"checkpointEvery": 100000},
    })


def run_variant(variant: str, model: str, steps: int, prompts: int, generations: int, tokens: int,
                gpu: bool = False) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from empo_trainer import model_source
    from empo_trainer.data import load_examples
    from empo_trainer.rollout_engine import RolloutEngine
    from empo_trainer.grpo_settings import grpo_config_kwargs
    from empo_trainer.rewards import build_reward_function
    from empo_trainer.sampling.transformers_backend import TransformersSampler

    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    torch.manual_seed(0)
    spec = _spec(model, prompts, generations, tokens, gpu)
    path = model_source.resolve(model)
    tokenizer = model_source.load_tokenizer(path)
    # fp32 master weights with bf16 compute (GRPOConfig bf16 on GPUs), as LearnerActor loads them:
    # a bf16 policy would measure another learner (and round away updates at lr 1e-6)
    policy = model_source.load_causal_lm(path, "float32")
    examples = load_examples(spec.dataset, spec.prompt)
    out = f"/tmp/empo-bench-train-{variant}"
    config = GRPOConfig(**grpo_config_kwargs(spec, out, max_steps=steps + 1, use_cpu=not gpu) | {"save_strategy": "no"})

    times, tokens_seen = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                tokens_seen.append(logs["completions/mean_length"] * prompts * generations)

    if variant == "trl":
        def trivial(prompts, completions, **kw):
            return [float(len(str(c)) % 2) for c in completions]

        trainer = GRPOTrainer(model=policy, reward_funcs=[trivial], args=config,
                              train_dataset=Dataset.from_list(examples), processing_class=tokenizer)
        # TRL's own generate: same budget; min_new_tokens is not forced, like ours.
    else:
        from empo_trainer.grpo_trainer import trainer_class

        engine = RolloutEngine(spec)
        trainer = trainer_class()(model=policy, reward_funcs=[build_reward_function(spec)], args=config,
                                  train_dataset=Dataset.from_list(examples), processing_class=tokenizer,
                                  rollout_func=engine, advantage_epsilon=spec.algorithm.advantage_epsilon)
        engine.local_sampler = TransformersSampler.from_model(trainer.model, tokenizer, 256)
    trainer.add_callback(Timer())
    trainer.train()
    timed = times[1:]  # the first step pays one-off costs (allocator warm-up, lazy imports)
    per_token = [t / n for t, n in zip(timed, tokens_seen[1:]) if n]
    return {
        "variant": variant,
        "step_seconds_mean": statistics.mean(timed),
        "step_seconds_stdev": statistics.stdev(timed) if len(timed) > 1 else 0.0,
        "seconds_per_completion_token": statistics.mean(per_token) if per_token else None,
        "tokens_per_second": sum(tokens_seen[1:]) / sum(timed) if timed else None,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps_timed": len(timed),
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if gpu else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant (one more runs as warm-up)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--gpu", action="store_true", help="learn and sample on the GPU, bf16 compute over fp32 masters (the device check)")
    parser.add_argument("--variant", choices=["trl", "empo"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = dict(model=args.model, steps=args.steps, prompts=args.prompts, generations=args.generations,
                 tokens=args.tokens, gpu=args.gpu)
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args.variant, **shape)))
        return
    results = {}
    for variant in ("trl", "empo"):
        proc = subprocess.run([sys.executable, __file__, "--variant", variant] +
                              [f"--{k}={v}" for k, v in shape.items() if k != "gpu"] + (["--gpu"] if args.gpu else []),
                              capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        results[variant] = json.loads(line[len("RESULT "):])
    # Completions differ in length between the two samplers (different RNG streams), so compare
    # the cost per generated token as well as per step.
    ratio_step = results["empo"]["step_seconds_mean"] / results["trl"]["step_seconds_mean"]
    ratio_token = (results["empo"]["seconds_per_completion_token"] / results["trl"]["seconds_per_completion_token"]
                   if results["trl"]["seconds_per_completion_token"] else None)
    summary = {"shape": shape, "cpus": os.cpu_count(), "load_average": os.getloadavg(), "results": results,
               "ratio_step_time": ratio_step, "ratio_time_per_token": ratio_token, "target_ratio": 1.05}
    print(f"{'variant':8} {'step s':>8} {'+-':>6} {'tok/s':>8} {'peak MiB':>9}")
    for r in results.values():
        print(f"{r['variant']:8} {r['step_seconds_mean']:8.2f} {r['step_seconds_stdev']:6.2f} "
              f"{r['tokens_per_second'] or 0:8.1f} {r['peak_rss_mib']:9.0f}")
    print(f"EMPO / TRL step time: {ratio_step:.3f}   per completion token: {ratio_token:.3f}   (target <= 1.05)")
    if args.gpu:
        # The device check of the real learner: one process per GPU, FSDP2, bf16 compute, fp32
        # masters; tokens/s, MFU and peak memory against empo plan's estimate (learner.json).
        learner = subprocess.run([sys.executable, str(Path(__file__).with_name("bench_learner.py")),
                                  f"--model={args.model}"], text=True)
        if learner.returncode:
            raise SystemExit("bench_learner failed")
        summary["learner"] = json.loads((RESULTS / "learner.json").read_text())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
