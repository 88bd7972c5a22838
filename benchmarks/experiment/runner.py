"""Plumbing of the CPU experiment: EmpoRun manifests, `empo train` subprocesses, held-out evals.

Every training run is the real `empo train` (local Ray, TRL GRPOTrainer, the EMPO reward engine);
every evaluation is the real `evaluate()` on the run's final checkpoint.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SYSTEM = "Answer briefly."
USER_TEMPLATE = "{question} Answer with just the number."


@dataclass(frozen=True)
class Settings:
    steps: int = 24
    prompts_per_step: int = 4
    num_generations: int = 4
    max_completion_length: int = 12
    temperature: float = 0.9
    learning_rate: float = 1e-5
    eval_k: int = 8
    eval_limit: int = 48
    max_prompt_length: int = 64  # word problems need more than one-digit sums
    # The evaluation's backend, "transformers" or "vllm" (its CPU build). Training generates in the
    # learner (sampler.replicas 0 colocates; the backend field applies to sampler engines only).
    sampler: str = "transformers"


def manifest(name: str, reward: str, seed: int, train_file: Path, s: Settings) -> dict[str, Any]:
    """The EmpoRun of one arm: EMPO (answers unlabeled) or supervised GRPO (reward: gold)."""
    return {
        "apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun", "metadata": {"name": name},
        "spec": {
            "model": {"source": "bundled:smollm2-135m-instruct", "dtype": "float32"},
            "task": "math",
            "prompt": {"system": SYSTEM, "userTemplate": USER_TEMPLATE},
            # answerField feeds label-accuracy monitoring; only reward: gold uses it as the reward
            "dataset": {"uri": str(train_file), "questionField": "question", "answerField": "answer",
                        "shuffleSeed": seed},
            "algorithm": {
                "reward": reward, "answerFallbacks": True, "seed": seed,
                "numGenerations": s.num_generations, "promptsPerStep": s.prompts_per_step,
                "temperature": s.temperature, "maxPromptLength": s.max_prompt_length, "maxCompletionLength": s.max_completion_length,
                "learningRate": s.learning_rate, "steps": s.steps, "gradientAccumulation": 1,
            },
            "sampler": {"backend": "transformers", "replicas": 0, "gpusPerReplica": 0},
            "learner": {"gpusPerReplica": 0, "precision": "fp32", "gradientCheckpointing": False},
            "storage": {"uri": "runs", "checkpointEvery": s.steps, "keepLast": 1},
            "eval": {"benchmarks": [], "atEnd": False},  # evaluated below, the same way for every arm
        },
    }


class CoreSlots:
    """One CPU core for each job running at once. vLLM's CPU build pins its OpenMP threads itself
    ('auto' takes core 0 and reserves the rest), so two jobs at once would share core 0 unless
    each is told which core is its own."""

    def __init__(self, jobs: int):
        self._free: queue.Queue[int] = queue.Queue()
        for i in range(jobs):
            self._free.put(i % (os.cpu_count() or 1))

    @contextmanager
    def env(self) -> Iterator[dict[str, str]]:
        core = self._free.get()
        try:
            yield {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": str(core)}
        finally:
            self._free.put(core)


def empo_command() -> list[str]:
    return [str(Path(sys.executable).parent / "empo")]


def train(manifest_path: Path, runs_dir: Path, steps: int, log: Path,
          env: dict[str, str] | None = None) -> tuple[int, float]:
    """Run `empo train` on one CPU thread; (exit code, seconds)."""
    cmd = empo_command() + ["train", str(manifest_path), "--output", str(runs_dir), "--steps", str(steps),
                            "--fresh", "--no-progress", "--num-cpus", "1"]
    started = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env or os.environ.copy())
    return rc, time.perf_counter() - started


def run_dir(runs_dir: Path, name: str) -> Path:
    return runs_dir / "default" / name


def final_checkpoint(runs_dir: Path, name: str) -> Path:
    steps = sorted((run_dir(runs_dir, name) / "checkpoints").glob("step-*"))
    if not steps:
        raise FileNotFoundError(f"no checkpoint under {run_dir(runs_dir, name) / 'checkpoints'}")
    return steps[-1]


def read_metrics(runs_dir: Path, name: str) -> list[dict[str, Any]]:
    path = run_dir(runs_dir, name) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def evaluate_model(model: str, heldout: Path, s: Settings, seed: int = 1234) -> dict[str, Any]:
    """Greedy pass@1 and k samples (avg@k, maj@k, semantic entropy) on the held-out split, graded
    with the training reward's extraction (fallbacks on) and equivalence."""
    import torch

    torch.set_num_threads(1)
    from empo_api.models import EvalSpec, PromptSpec
    from empo_trainer import model_source
    from empo_trainer.evaluation import evaluate
    from empo_trainer.evaluation.grading import FunctionMatcher
    from empo_trainer.rewards.extraction import extract_answer
    from empo_trainer.rewards.math_equivalence import MathEquivalence

    path = model_source.resolve(model) if model.startswith("bundled:") else model
    if s.sampler == "vllm":
        from empo_trainer.sampling.vllm_backend import VLLMSampler

        sampler = VLLMSampler(path, "float32", max_prompt_length=s.max_prompt_length,
                              max_model_len=s.max_prompt_length + s.max_completion_length, seed=seed)
    else:
        from empo_trainer.sampling.transformers_backend import TransformersSampler

        sampler = TransformersSampler(path, "float32", max_prompt_length=s.max_prompt_length)
    matcher = FunctionMatcher(lambda text: extract_answer(text, fallbacks=True), MathEquivalence().equivalent)
    prompt = PromptSpec(system=SYSTEM, user_template=USER_TEMPLATE)
    bench = [f"arith-heldout={heldout}"]
    started = time.perf_counter()
    greedy = evaluate(sampler, bench, EvalSpec(benchmarks=bench, decoding="greedy", limit=s.eval_limit,
                                               max_new_tokens=s.max_completion_length),
                      prompt, progress=False, matcher=matcher, seed=seed)
    sampled = evaluate(sampler, bench, EvalSpec(benchmarks=bench, decoding="sampling", k=s.eval_k,
                                                temperature=s.temperature, limit=s.eval_limit,
                                                max_new_tokens=s.max_completion_length),
                       prompt, progress=False, matcher=matcher, seed=seed)
    g, k = greedy.benchmarks["arith-heldout"], sampled.benchmarks["arith-heldout"]
    records = k.records
    return {
        "model": model, "questions": len(g.records),
        "greedy": g.accuracy,
        f"avg@{s.eval_k}": k.accuracy,
        f"maj@{s.eval_k}": k.metrics()[f"maj@{s.eval_k}"],
        "semantic_entropy": k.mean_semantic_entropy,
        "answered": sum(a is not None for r in records for a in r.answers) / max(1, sum(len(r.answers) for r in records)),
        "greedy_examples": [r.completions[0] for r in g.records[:4]],
        "seconds": round(time.perf_counter() - started, 1),
    }


def write_manifest(doc: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
