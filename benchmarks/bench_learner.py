"""The real learner's throughput: sharded (FSDP2), bf16 compute, fp32 master weights, one process per GPU.

Starts one learner process per GPU (or `--processes` on CPU, gloo) with the rendezvous variables
the driver sets, builds the learner's GRPOConfig from a spec (learner.sharding, precision bf16),
and times TRL GRPO optimizer steps on fixed rollouts of full length (generation is not timed:
this measures the learner). Prints and writes benchmarks/results/learner.json:

- tokens/s: prompt + completion tokens trained per second, all processes together;
- MFU: 6 x parameters x tokens/s over the GPUs' peak dense bf16 FLOP/s (the 6PT convention:
  gradient checkpointing's recomputation is not counted as useful work);
- peak GPU memory per process, next to what `empo plan` estimates for the same spec.

    python benchmarks/bench_learner.py                      # every visible GPU, SmolLM2-135M
    python benchmarks/bench_learner.py --processes 2        # on CPU: a smoke check of the same path
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# Dense bf16 peak FLOP/s per GPU (vendor datasheets, without sparsity).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def _spec(model: str, processes: int, gpu: bool, micro: int, prompt_tokens: int, completion_tokens: int,
          sharding: str):
    from empo_api.models import EmpoRunSpec

    learner = ({"replicas": 1, "gpusPerReplica": processes} if gpu else {"replicas": processes, "gpusPerReplica": 0})
    return EmpoRunSpec.model_validate({
        "model": {"source": model, "dtype": "bfloat16"},
        "dataset": {"uri": "d.jsonl"},
        "algorithm": {"numGenerations": micro, "promptsPerStep": processes, "gradientAccumulation": 1,
                      "maxPromptLength": prompt_tokens, "maxCompletionLength": completion_tokens, "learningRate": 1e-6},
        "sampler": {"backend": "vllm", "replicas": processes, "gpusPerReplica": 1},
        "learner": {**learner, "sharding": sharding, "precision": "bf16", "gradientCheckpointing": True},
    })


def worker(args) -> None:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from empo_trainer import model_source
    from empo_trainer.distributed import prepare
    from empo_trainer.grpo_settings import grpo_config_kwargs

    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    gpu = torch.cuda.is_available()
    spec = _spec(args.model, world, gpu, args.micro, args.prompt_tokens, args.completion_tokens, args.sharding)
    path = model_source.resolve(args.model)
    model = model_source.load_causal_lm(path, "float32")  # fp32 masters, as the learner loads them
    vocab = model.config.vocab_size
    kwargs = grpo_config_kwargs(spec, f"/tmp/empo-bench-learner-{rank}", max_steps=args.steps + 1, use_cpu=not gpu)
    kwargs.update(save_strategy="no", bf16=gpu)

    def rollout(prompts, trainer):
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": []}
        for i, prompt in enumerate(prompts):
            g = torch.Generator().manual_seed(sum(map(ord, str(prompt))) * 1000 + i)
            out["prompt_ids"].append(torch.randint(10, vocab, (args.prompt_tokens,), generator=g).tolist())
            out["completion_ids"].append(torch.randint(10, vocab, (args.completion_tokens,), generator=g).tolist())
            out["logprobs"].append([-1.0] * args.completion_tokens)
        return out

    def reward(prompts, completions, completion_ids, **kw):
        return [float(sum(c) % 7) for c in completion_ids]

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if gpu:
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    prompts = [{"prompt": f"q{i}"} for i in range(64)]
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=GRPOConfig(**kwargs),
                          train_dataset=Dataset.from_list(prompts), processing_class=model_source.load_tokenizer(path),
                          rollout_func=rollout)
    prepare(trainer)
    trainer.add_callback(Timer())
    params = sum(p.numel() for p in model.parameters())  # before sharding: the whole model
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    masters = sorted({str(p.dtype) for p in trainer.model.parameters()})
    from torch.distributed.tensor import DTensor

    # what ran, not what was asked: one process (or learner.sharding none) trains unsharded
    sharded = any(isinstance(p, DTensor) for p in trainer.model_wrapped.parameters())
    result = {"rank": rank, "step_seconds": times[1:] or times, "masters": masters, "sharded": sharded,
              "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
              "device": torch.cuda.get_device_name() if gpu else "cpu", "params": params}
    Path(args.out, f"rank{rank}.json").write_text(json.dumps(result))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args) -> dict:
    """One process per GPU (or --processes on CPU), rendezvous as the driver sets it up."""
    import tempfile

    import torch

    gpus = torch.cuda.device_count()
    processes = args.processes or gpus or 2
    out = Path(tempfile.mkdtemp(prefix="empo-bench-learner-"))
    port, procs = _port(), []
    for rank in range(processes):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE=str(processes), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(processes))
        if not gpus:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // processes))
        cmd = [sys.executable, __file__, "--worker", "--out", str(out)] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("worker", "out", "processes")]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        log, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"learner process failed:\n{log[-4000:]}")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
    return summarize(args, processes, ranks, bool(gpus))


def summarize(args, processes: int, ranks: list[dict], gpu: bool) -> dict:
    """The run's figures from every rank's result; `sharding` is what the ranks ran (none when
    their parameters were not sharded, e.g. one process), `requested_sharding` what was asked."""
    step = statistics.mean(max(r["step_seconds"][i] for r in ranks) for i in range(len(ranks[0]["step_seconds"])))
    tokens = processes * args.micro * (args.prompt_tokens + args.completion_tokens)
    device = ranks[0]["device"]
    peak = next((v for k, v in PEAK_BF16.items() if k in device), None)
    params = ranks[0]["params"]
    summary = {
        "model": args.model, "params": params, "processes": processes, "device": device,
        "sharding": args.sharding if all(r.get("sharded") for r in ranks) else "none",
        "requested_sharding": args.sharding,
        "micro_batch": args.micro, "sequence": args.prompt_tokens + args.completion_tokens,
        "step_seconds": step, "tokens_per_second": tokens / step,
        "mfu": 6 * params * tokens / step / (processes * peak) if peak else None,
        "peak_gpu_gib": max(r["peak_gpu_gib"] for r in ranks) if ranks[0]["peak_gpu_gib"] is not None else None,
        "master_dtypes": ranks[0]["masters"],
    }
    summary["plan_gib"] = _planned(args, processes, gpu)
    return summary


def _planned(args, processes: int, gpu: bool) -> float | None:
    """What `empo plan` estimates per learner GPU for this spec (reserve excluded: torch does not count it)."""
    from empo_api.capacity import GIB, RESERVE_BYTES, known_shape, learner_estimate

    shape = known_shape(args.model)
    if shape is None or not gpu:
        return None
    spec = _spec(args.model, processes, gpu, args.micro, args.prompt_tokens, args.completion_tokens, args.sharding)
    return (learner_estimate(spec, shape, 80 * GIB).total - RESERVE_BYTES) / GIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--processes", type=int, default=0, help="learner processes (default: one per GPU; 2 on CPU)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (one more runs as warm-up)")
    parser.add_argument("--micro", type=int, default=8, help="completions per process per step")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--completion-tokens", type=int, default=768)
    parser.add_argument("--sharding", default="fsdp", choices=["fsdp", "zero2", "none"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    summary = launch(args)
    mfu = f"{summary['mfu']:.1%}" if summary["mfu"] is not None else "n/a"
    peak = f"{summary['peak_gpu_gib']:.2f} GiB (plan: {summary['plan_gib']:.2f})" if summary["peak_gpu_gib"] else "n/a"
    print(f"learner: {summary['processes']} x {summary['device']}, {summary['sharding']}, masters "
          f"{summary['master_dtypes']}: {summary['tokens_per_second']:.0f} tokens/s, MFU {mfu}, peak {peak}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "learner.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
