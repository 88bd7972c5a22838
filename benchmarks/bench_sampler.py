"""Sampling on `make demo`'s own workload, transformers against vLLM's CPU build, start-up included.

The demo (examples/local-cpu.yaml) samples 24 steps x promptsPerStep x numGenerations completions
of maxCompletionLength tokens, and greedily answers every held-out question at steps 0, 12 and
24. This script makes exactly those generate calls (same prompts, chat template, lengths and
temperature) through each backend in its own process, and times the whole of it from before the
engine is built to the last token: what the demo's wall time would gain or lose from the switch.

    python benchmarks/bench_sampler.py [--backends transformers,vllm] [--dtype auto]

Writes benchmarks/results/sampler.json. `--dtype auto` is float32 on CPUs without bf16 units.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def workload(spec):
    """(prompts, SamplingParams) of every generate call the demo makes, in order."""
    from empo_trainer.data import load_examples
    from empo_trainer.evaluation.benchmarks import load_benchmark
    from empo_trainer.evaluation.evaluate import sampling_params
    from empo_trainer.sampling import SamplingParams
    from empo_trainer.sampling.chat import build_messages

    a = spec.algorithm
    examples = load_examples(spec.dataset, spec.prompt)
    items = load_benchmark(spec.eval.benchmarks[0], spec.eval.limit).items
    heldout = [build_messages(i.question, spec.prompt) for i in items]
    greedy = sampling_params(spec.eval, 0)
    calls = []
    for step in range(a.steps + 1):
        if step % spec.eval.every == 0:
            calls += [(heldout[i:i + 32], greedy) for i in range(0, len(heldout), 32)]  # evaluate()'s batches
        if step == a.steps:
            break
        rows = [examples[(step * a.prompts_per_step + i) % len(examples)] for i in range(a.prompts_per_step)]
        calls.append(([r["prompt"] for r in rows], SamplingParams(
            n=a.num_generations, temperature=a.temperature, top_p=a.top_p, max_new_tokens=a.max_completion_length,
            seed=a.seed * 100_003 + step)))
    return calls


def run_one(backend: str, dtype: str) -> dict:
    import torch

    from empo_api.models import EmpoRun
    from empo_trainer import model_source
    from empo_trainer.sampling import make_sampler

    run = EmpoRun.model_validate(__import__("yaml").safe_load((REPO / "examples/local-cpu.yaml").read_text()))
    spec = run.spec.model_copy(update={"sampler": run.spec.sampler.model_copy(update={"backend": backend})})
    if dtype != "auto":
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"dtype": dtype})})
    os.chdir(REPO)
    calls = workload(spec)
    torch.set_num_threads(os.cpu_count())
    started = time.perf_counter()
    sampler = make_sampler(spec, model_source.resolve(spec.model.source))
    ready = time.perf_counter()
    tokens = 0
    for prompts, params in calls:
        tokens += sum(g.num_tokens for g in sampler.generate(prompts, params))
    done = time.perf_counter()
    sync = {}
    if backend == "vllm":  # one weight sync of the whole model, as after each optimizer step
        from types import SimpleNamespace

        from empo_trainer.learner_weights import iter_full_weights
        from empo_trainer.weight_sync import buckets

        learner = model_source.load_causal_lm(model_source.resolve(spec.model.source), "float32")
        t0, size = time.perf_counter(), 0
        for bucket in buckets(iter_full_weights(SimpleNamespace(model=learner))):
            size += sum(t.numel() * t.element_size() for _, t in bucket)
            sampler.load_weights(bucket)
        sampler.weights_loaded()
        seconds = time.perf_counter() - t0
        sync = {"sync_gib": round(size / 2**30, 3), "sync_seconds": round(seconds, 2),
                "sync_seconds_per_gib": round(seconds / (size / 2**30), 2)}
    return {**sync, "backend": backend, "dtype": getattr(sampler, "dtype", spec.model.dtype), "calls": len(calls),
            "tokens": tokens, "startup_seconds": round(ready - started, 1),
            "generate_seconds": round(done - ready, 1), "total_seconds": round(done - started, 1),
            "tokens_per_second": round(tokens / (done - ready), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="transformers,vllm")
    parser.add_argument("--dtype", default="auto", help="spec.model.dtype override (auto: the demo's)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.dtype)), flush=True)
        return
    results = []
    for backend in args.backends.split(","):
        proc = subprocess.run([sys.executable, __file__, "--one", backend, "--dtype", args.dtype],
                              capture_output=True, text=True)
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not line:
            raise SystemExit(f"{backend} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        results.append(json.loads(line[0][len("RESULT "):]))
        print(results[-1], flush=True)
    load = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sampler.json").write_text(json.dumps(
        {"workload": "examples/local-cpu.yaml (make demo): every generate call, start-up included",
         "cpus": os.cpu_count(), "load_average_at_end": round(load, 1), "results": results}, indent=2) + "\n")


if __name__ == "__main__":  # vLLM starts its engine core in a spawned process
    main()
