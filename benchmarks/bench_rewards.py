"""Math answer clustering: our engine (canonical hashing, numeric check, cached symbolic check in a
worker process) against naive pairwise math-verify clustering, on realistic groups.

    python benchmarks/bench_rewards.py                    # 256 prompts x G = 16, naive on 24 of them
    python benchmarks/bench_rewards.py --naive-prompts 64

Groups: each prompt takes a MATH500 gold answer (data/math-eval/math500.jsonl,
reward_model.ground_truth); a majority of the G answers are the gold answer or equivalent rewritings
of it (0.5 / \\frac12 / \\dfrac{1}{2} / x = ..., \\left( \\right), spacing), the rest are wrong answers
(off-by-one numbers and other prompts' gold answers), some repeated, as sampled groups are.
The naive side parses every answer with math-verify and verifies all G(G-1)/2 pairs (its own
SIGALRM timeouts, main thread), on a subsample of the prompts (it is slow), and its time per prompt
is compared with ours on the same prompts and on all of them.
Recall: the share of pairs of equivalent forms (by construction) that end up in one cluster;
false merges: the share of pairs of different answers that end up in one cluster.
Prints the figures and writes benchmarks/results/rewards.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from empo_trainer.rewards.clustering import greedy_clusters  # noqa: E402
from empo_trainer.rewards.math_equivalence import MathEquivalence, _as_fraction, canonicalize  # noqa: E402
from empo_trainer.rewards.symbolic import SymbolicChecker  # noqa: E402


def load_golds() -> list[str]:
    golds = []
    with open(REPO / "data" / "math-eval" / "math500.jsonl") as fh:
        for line in fh:
            truth = json.loads(line)["reward_model"]["ground_truth"]
            golds.append(truth[0] if isinstance(truth, list) else truth)
    return golds


def rewritings(gold: str) -> list[str]:
    """Equivalent forms of a gold answer, as models write them."""
    forms = {gold.replace(" ", ""), re.sub(r",\s*", ", ", gold), gold.replace("\\frac", "\\dfrac"),
             re.sub(r"\\frac\{(\d)\}\{(\d)\}", r"\\frac\1\2", gold)}
    if gold.startswith("(") and gold.endswith(")"):
        forms.add("\\left(" + gold[1:-1] + "\\right)")
    if gold.startswith("\\left(") and gold.endswith("\\right)"):
        forms.add("(" + gold[len("\\left("):-len("\\right)")] + ")")
    value = _as_fraction(canonicalize(gold))
    if value is not None:
        forms |= {f"x = {gold}" if "=" not in gold else gold, f"{value.numerator}/{value.denominator}" if value.denominator != 1 else f"{value}.0",
                  f"\\frac{{{value.numerator}}}{{{value.denominator}}}"}
        if value.denominator != 1 and 10 ** 6 % value.denominator == 0:
            forms.add(str(float(value)))
    elif "," not in gold and "=" not in gold:
        forms.add(f"x = {gold}")
    forms.discard(gold)
    return sorted(forms)


def wrong_answers(gold: str, pool: list[str], rng: random.Random) -> list[str]:
    value = _as_fraction(canonicalize(gold))
    out = [str(value.numerator + 1) if value is not None and value.denominator == 1 else rng.choice(pool)]
    out += rng.sample(pool, 3)
    return [w for w in out if canonicalize(w) != canonicalize(gold)] or ["-12345"]


def make_groups(golds: list[str], prompts: int, group_size: int, seed: int):
    """(answers, truth labels): label 0 = equivalent to the gold answer, others distinct wrong answers."""
    rng = random.Random(seed)
    chosen = rng.sample(golds, prompts)
    groups = []
    for gold in chosen:
        right = [gold] + rewritings(gold)
        wrong = wrong_answers(gold, golds, rng)
        n_right = rng.randint(group_size // 3, group_size - 2)
        items = [(rng.choice(right), 0) for _ in range(n_right)]
        items += [(w, 1 + wrong.index(w)) for w in (rng.choice(wrong) for _ in range(group_size - n_right))]
        rng.shuffle(items)
        groups.append(([a for a, _ in items], [t for _, t in items]))
    return groups


def naive_cluster(answers: list[str]) -> list[int]:
    from math_verify import parse, verify

    parsed = [parse("\\boxed{" + a + "}") for a in answers]
    n = len(answers)
    equal = {(i, j): verify(parsed[i], parsed[j]) or verify(parsed[j], parsed[i])
             for i in range(n) for j in range(i + 1, n)}
    return greedy_clusters(list(range(n)), lambda i, j: equal[(min(i, j), max(i, j))])


def pair_scores(groups, clusterings) -> dict:
    same_total = same_hit = diff_total = diff_merged = 0
    for (_, truth), ids in zip(groups, clusterings):
        for i in range(len(truth)):
            for j in range(i + 1, len(truth)):
                if truth[i] == truth[j]:
                    same_total += 1
                    same_hit += ids[i] == ids[j]
                else:
                    diff_total += 1
                    diff_merged += ids[i] == ids[j]
    return {"recall": same_hit / same_total, "false_merge_rate": diff_merged / max(1, diff_total),
            "equivalent_pairs": same_total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--naive-prompts", type=int, default=24, help="prompts the naive side clusters (it is slow)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    groups = make_groups(load_golds(), args.prompts, args.group_size, args.seed)
    sub = groups[: args.naive_prompts]

    checker = SymbolicChecker(max_workers=1)
    started = time.perf_counter()
    assert checker.equivalent("\\sqrt{4}", "2")  # start the worker (paid once per process)
    worker_start_s = time.perf_counter() - started
    try:
        ours = MathEquivalence(timeout_s=2.0, checker=checker)  # fresh caches
        started = time.perf_counter()
        ours_sub = [ours.cluster(a) for a, _ in sub]
        ours_sub_s = time.perf_counter() - started
        ours = MathEquivalence(timeout_s=2.0, checker=checker)
        started = time.perf_counter()
        ours_all = [ours.cluster(a) for a, _ in groups]
        ours_all_s = time.perf_counter() - started
        symbolic_calls = ours.symbolic_calls
    finally:
        checker.close()

    import math_verify  # noqa: F401  (import time is not clustering time)

    naive_cluster(["1", "2"])  # warm sympy's and math-verify's first-use paths
    started = time.perf_counter()
    naive_sub = [naive_cluster(a) for a, _ in sub]
    naive_sub_s = time.perf_counter() - started

    n_sub, n_all = len(sub), len(groups)
    per_prompt = {"ours_subsample_ms": 1e3 * ours_sub_s / n_sub, "ours_all_ms": 1e3 * ours_all_s / n_all,
                  "naive_subsample_ms": 1e3 * naive_sub_s / n_sub}
    speedup_same = naive_sub_s / ours_sub_s
    speedup_all = per_prompt["naive_subsample_ms"] / per_prompt["ours_all_ms"]
    quality = {"ours_subsample": pair_scores(sub, ours_sub), "naive_subsample": pair_scores(sub, naive_sub),
               "ours_all": pair_scores(groups, ours_all)}
    result = {
        "benchmark": "rewards",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "setup": {"prompts": n_all, "group_size": args.group_size, "naive_prompts": n_sub, "seed": args.seed,
                  "naive_note": f"naive side run on the first {n_sub} prompts only (subsampled: it is slow)"},
        "seconds": {"ours_all": ours_all_s, "ours_subsample": ours_sub_s, "naive_subsample": naive_sub_s,
                    "worker_start_once": worker_start_s},
        "per_prompt_ms": per_prompt,
        "throughput_groups_per_s": {"ours": n_all / ours_all_s, "naive": n_sub / naive_sub_s},
        "speedup": {"same_prompts": speedup_same, "per_prompt_vs_all": speedup_all, "target": 20.0},
        "symbolic_calls_all": symbolic_calls,
        "naive_verify_calls_per_prompt": args.group_size * (args.group_size - 1) // 2,
        "quality": quality,
    }
    out = REPO / "benchmarks" / "results" / "rewards.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"groups: {n_all} prompts x G = {args.group_size} (MATH500 gold answers, rewritings, wrong answers)")
    print(f"ours : {ours_all_s:7.2f} s for all {n_all} ({n_all / ours_all_s:8.1f} groups/s, "
          f"{per_prompt['ours_all_ms']:.2f} ms/prompt), {symbolic_calls} symbolic calls; "
          f"worker start once {worker_start_s:.1f} s (not included)")
    print(f"naive: {naive_sub_s:7.2f} s for {n_sub} prompts ({per_prompt['naive_subsample_ms']:.1f} ms/prompt; "
          f"subsampled), ours on the same: {ours_sub_s:.2f} s")
    print(f"speedup: {speedup_same:.1f}x on the same prompts, {speedup_all:.1f}x per prompt vs all (target >= 20x)")
    for name, q in quality.items():
        print(f"{name:16s} recall {q['recall']:.4f}  false merges {q['false_merge_rate']:.4f}  "
              f"({q['equivalent_pairs']} equivalent pairs)")
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
