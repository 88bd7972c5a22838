"""Evaluation costs on this machine: grading throughput, the eval loop on the tiny model, and
report rendering for a long run.

    python benchmarks/bench_eval.py            # defaults: 500 MATH500 golds, 32 questions, 2000 steps
    python benchmarks/bench_eval.py --quick

Prints the figures and writes benchmarks/results/eval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "eval.json"

from empo_api.models import EvalSpec, PromptSpec, StorageSpec  # noqa: E402
from empo_trainer.evaluation import evaluate, load_benchmark  # noqa: E402
from empo_trainer.evaluation.grading import default_matcher, grade  # noqa: E402


def bench_grading(n: int) -> dict:
    """Grade a right and a wrong boxed answer against every MATH500 gold (symbolic checks included)."""
    matcher = default_matcher()
    items = load_benchmark("math500", limit=n).items
    started = time.perf_counter()
    right = sum(grade(matcher, f"\\boxed{{{i.gold[0]}}}", i.gold, "math").correct for i in items)
    wrong = sum(grade(matcher, "\\boxed{\\frac{7}{13}+x}", i.gold, "math").correct for i in items)
    seconds = time.perf_counter() - started
    return {"pairs": 2 * len(items), "seconds": round(seconds, 3), "pairs_per_second": round(2 * len(items) / seconds, 1),
            "gold_self_match_rate": right / len(items), "false_matches": wrong}


def bench_eval_loop(n: int) -> dict:
    from empo_trainer.model_source import resolve
    from empo_trainer.sampling.transformers_backend import TransformersSampler

    sampler = TransformersSampler(resolve("bundled:tiny-random"), max_prompt_length=256)
    spec = EvalSpec(limit=n, max_new_tokens=32)
    report = evaluate(sampler, ["arith-heldout"], spec, PromptSpec(), progress=False)
    s = report.settings
    return {"questions": n, "max_new_tokens": 32, "seconds": s["seconds"], "questions_per_second": round(n / s["seconds"], 2),
            "tokens_per_second": s["tokensPerSecond"]}


def bench_report(steps: int) -> dict:
    from empo_trainer.evaluation.report import write_report
    from empo_trainer.storage import open_run_storage

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        run = open_run_storage(StorageSpec(uri=tmp), "bench", "run")
        lines = [json.dumps({"step": s, "reward": rng.random(), "reward_std": 0.1, "semantic_entropy": rng.random(),
                             "filtered_fraction": rng.random(), "completion_length": 100 * rng.random(),
                             "tokens_per_second": 1000 * rng.random()}) for s in range(1, steps + 1)]
        run.write_bytes("metrics.jsonl", ("\n".join(lines) + "\n").encode())
        for s in range(0, steps + 1, max(1, steps // 10)):
            run.write_json(f"eval/step-{s:06d}.json", {"step": s, "accuracy": {"math500": rng.random()}, "average": 0.5})
        started = time.perf_counter()
        out = write_report(run)
        seconds = time.perf_counter() - started
        return {"steps": steps, "seconds": round(seconds, 3), "html_bytes": out.stat().st_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    grading = bench_grading(100 if args.quick else 500)
    print(f"grading: {grading['pairs']} pairs in {grading['seconds']} s = {grading['pairs_per_second']} pairs/s "
          f"(gold self-match {grading['gold_self_match_rate']:.3f}, false matches {grading['false_matches']})")
    loop = bench_eval_loop(8 if args.quick else 32)
    print(f"eval loop (tiny model, CPU, greedy): {loop['questions']} questions in {loop['seconds']} s = "
          f"{loop['questions_per_second']} q/s, {loop['tokens_per_second']} tokens/s")
    report = bench_report(200 if args.quick else 2000)
    print(f"report: {report['steps']} steps in {report['seconds']} s ({report['html_bytes']} bytes of HTML)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "grading": grading, "eval_loop": loop, "report": report}, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
