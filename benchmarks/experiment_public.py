"""EMPO on a public benchmark on CPU: pick the benchmark, then EMPO vs gold-reward GRPO vs base.

Step 1, candidates: greedy pass@1, avg@k and maj@k of the bundled SmolLM2-135M-Instruct on a seeded
sample of each arithmetic word-problem set shipped in data/arith-eval (GSM8K, SVAMP, ASDiv, MAWPS).
The benchmark to train on is the one where maj@k most exceeds avg@k: there the model's samples agree
on the right answer more often than one sample is right, which is the signal EMPO's reward sharpens.

    nice -n 10 .venv/bin/python benchmarks/experiment_public.py candidates --limit 40

Step 2, experiment: split the chosen benchmark (or --benchmark NAME) into unlabeled training
questions and held-out test questions; train EMPO (no labels) and GRPO (gold reward) per seed with
the real `empo train`, evaluate them and the base model on the test questions (greedy pass@1,
avg@k, maj@k, semantic entropy), same budget for every arm.

    nice -n 10 .venv/bin/python benchmarks/experiment_public.py experiment --seeds 0 1 2

Both write JSON (and the experiment a PNG) under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "trainer"), str(ROOT / "operator")]

from benchmarks import experiment_empo_cpu as cpu  # noqa: E402  (sets the offline environment)
from benchmarks.experiment import runner, tasks  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CANDIDATES = ("gsm8k", "svamp", "asdiv", "mawps")
# Word problems: longer prompts than one-digit sums. 16 new tokens cut 94-100% of the completions
# before their answer (benchmarks/results/candidates-public-16tok.json); greedy completions
# state their answer ("... The answer is 7.") within 20-45 tokens, so 64 leaves room to finish.
# Evaluations with vLLM's CPU build: 40 questions x 9 samples in 200-260 s where transformers took
# 1968 s; what lets seven evaluations fit the two-hour budget. Training generates in the learner.
SETTINGS = runner.Settings(max_prompt_length=256, max_completion_length=64, sampler="vllm")


def benchmark_rows(name: str) -> list[dict]:
    """Every item of a shipped benchmark as {question, answer} (the first gold answer)."""
    from empo_trainer.evaluation.benchmarks import load_benchmark

    return [{"question": item.question, "answer": item.gold[0], "source": f"{name}:{item.index}"}
            for item in load_benchmark(name).items]


def sample(rows: list[dict], n: int, seed: int) -> list[dict]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n]


def split(rows: list[dict], test: int, train: int | None, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, test) from one seeded shuffle: disjoint by construction."""
    shuffled = sample(rows, len(rows), seed)
    rest = shuffled[test:]
    return (rest[:train] if train else rest), shuffled[:test]


def gap(row: dict, k: int) -> float:
    return row[f"maj@{k}"] - row[f"avg@{k}"]


def candidates(args: argparse.Namespace) -> int:
    settings = replace(SETTINGS, eval_k=args.eval_k, eval_limit=args.limit,
                       max_completion_length=args.max_completion_length, sampler=args.sampler)
    work = args.work / "candidates"
    work.mkdir(parents=True, exist_ok=True)
    started, load_before = time.perf_counter(), os.getloadavg()
    slots = runner.CoreSlots(args.parallel)

    def measure(name: str) -> dict:
        rows = sample(benchmark_rows(name), args.limit, args.seed)
        data = tasks.write_jsonl(rows, work / f"{name}.jsonl")
        done = work / f"{name}.eval.json"
        if args.reuse and done.exists() and json.loads(done.read_text()).get("settings") == asdict(settings):
            return json.loads(done.read_text())  # measured earlier with the same settings and sample
        with slots.env() as env:
            ev = cpu.eval_subprocess("bundled:smollm2-135m-instruct", data, done, settings, env)
        done.write_text(json.dumps({**ev, "settings": asdict(settings)}, indent=1))
        return ev

    with ThreadPoolExecutor(args.parallel) as pool:  # each evaluation is a child process on one thread
        evaluations = dict(zip(args.benchmarks, pool.map(measure, args.benchmarks)))
    table = {}
    for name, ev in evaluations.items():
        table[name] = ev
        print(f"{name:<8} greedy {ev['greedy']:.3f}  avg@{args.eval_k} {ev[f'avg@{args.eval_k}']:.3f}  "
              f"maj@{args.eval_k} {ev[f'maj@{args.eval_k}']:.3f}  gap {gap(ev, args.eval_k):+.3f}  "
              f"({ev['questions']} questions, {ev['seconds']:.0f}s)", flush=True)
    chosen = max(table, key=lambda n: gap(table[n], args.eval_k))
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "command": "nice -n 10 .venv/bin/python benchmarks/experiment_public.py " + " ".join(sys.argv[1:]),
        "model": "bundled:smollm2-135m-instruct", "questions_per_benchmark": args.limit, "sample_seed": args.seed,
        "prompt": {"system": runner.SYSTEM, "userTemplate": runner.USER_TEMPLATE, "answerFallbacks": True},
        "settings": asdict(settings), "table": table, "chosen": chosen,
        "rule": f"the benchmark where maj@{args.eval_k} - avg@{args.eval_k} is largest",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"chosen: {chosen}; wrote {args.out}")
    return 0


def experiment(args: argparse.Namespace) -> int:
    name = args.benchmark
    if name == "auto":
        name = json.loads(args.candidates.read_text())["chosen"]
    settings = replace(SETTINGS, steps=args.steps, learning_rate=args.lr, eval_k=args.eval_k, eval_limit=args.test,
                       max_completion_length=args.max_completion_length, sampler=args.sampler,
                       num_generations=args.num_generations, prompts_per_step=args.prompts_per_step)
    train_rows, test_rows = split(benchmark_rows(name), args.test, args.train, args.seed)
    cpu.run_experiment(train_rows, test_rows, settings, args.seeds, args.arms, args.parallel, args.work / name,
                       args.out or RESULTS / f"experiment-{name}.json", args.keep_checkpoints,
                       f"{name}: {len(train_rows)} unlabeled training and {len(test_rows)} held-out test questions "
                       f"from one seeded shuffle (seed {args.seed})", "benchmarks/experiment_public.py", args.reuse)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("candidates", help="measure the base model on each candidate benchmark and choose one")
    c.add_argument("--benchmarks", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    c.add_argument("--limit", type=int, default=40, help="questions per benchmark (a seeded sample)")
    c.add_argument("--eval-k", type=int, default=8)
    c.add_argument("--max-completion-length", type=int, default=SETTINGS.max_completion_length,
                   help="new tokens per completion")
    c.add_argument("--seed", type=int, default=17)
    c.add_argument("--sampler", choices=("vllm", "transformers"), default=SETTINGS.sampler)
    c.add_argument("--work", type=Path, default=ROOT / ".cache" / "empo" / "experiment-public")
    c.add_argument("--out", type=Path, default=RESULTS / "candidates-public.json")
    c.add_argument("--reuse", action="store_true", help="keep evaluations already in --work made with the same settings")
    c.add_argument("--parallel", type=int, default=2, help="evaluations at once, one CPU thread each")
    e = sub.add_parser("experiment", help="EMPO vs gold-reward GRPO vs base on one benchmark")
    e.add_argument("--benchmark", default="auto", help=f"one of {', '.join(CANDIDATES)}, or auto: the candidates' choice")
    e.add_argument("--candidates", type=Path, default=RESULTS / "candidates-public.json")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    e.add_argument("--arms", nargs="+", default=list(cpu.ARMS), choices=list(cpu.ARMS))
    e.add_argument("--test", type=int, default=64, help="held-out test questions")
    e.add_argument("--train", type=int, default=None, help="training questions (default: all the rest)")
    e.add_argument("--steps", type=int, default=24)
    e.add_argument("--lr", type=float, default=1e-5)
    e.add_argument("--eval-k", type=int, default=8)
    e.add_argument("--max-completion-length", type=int, default=SETTINGS.max_completion_length,
                   help="new tokens per completion, in training and evaluation")
    e.add_argument("--seed", type=int, default=17, help="seed of the train/test split")
    e.add_argument("--sampler", choices=("vllm", "transformers"), default=SETTINGS.sampler,
                   help="generation backend of the evaluations")
    e.add_argument("--num-generations", type=int, default=SETTINGS.num_generations, help="G, samples per question")
    e.add_argument("--prompts-per-step", type=int, default=SETTINGS.prompts_per_step)
    e.add_argument("--parallel", type=int, default=2, help="runs at once, one CPU thread each")
    e.add_argument("--work", type=Path, default=ROOT / ".cache" / "empo" / "experiment-public")
    e.add_argument("--out", type=Path, default=None)
    e.add_argument("--keep-checkpoints", action="store_true")
    e.add_argument("--reuse", action="store_true",
                   help="keep runs and evaluations an interrupted invocation finished in --work (same settings)")
    args = p.parse_args()
    return candidates(args) if args.command == "candidates" else experiment(args)


if __name__ == "__main__":
    sys.exit(main())
