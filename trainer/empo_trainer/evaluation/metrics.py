"""Accuracy metrics over k samples per question. Pure functions, table-tested.

- greedy pass@1: one greedy completion per question, correct or not (the paper's metric);
- avg@k: mean correctness of the k samples;
- maj@k: the most common answer (by equivalence) among the k samples is correct;
- pass@k: unbiased estimator from n >= k samples with c correct, 1 - C(n-c, k) / C(n, k);
- semantic entropy of the k samples' answers, H = -sum_j p_j ln p_j over answer clusters.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    # Python's int / int of big binomials is correctly rounded: no overflow, no float drift.
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def avg_at_k(correct: Sequence[bool]) -> float:
    return sum(correct) / len(correct) if correct else 0.0


def cluster_answers(answers: Sequence[str | None], equivalent: Callable[[str, str], bool]) -> list[int]:
    """Cluster id per answer: greedy against each cluster's first member (as the reward does).
    Unparsed answers (None) each form their own cluster."""
    representatives: list[str | None] = []
    ids = []
    for answer in answers:
        found = None
        if answer is not None:
            same_text = [j for j, r in enumerate(representatives) if r == answer]
            found = same_text[0] if same_text else next(
                (j for j, r in enumerate(representatives) if r is not None and equivalent(answer, r)), None)
        if found is None:
            representatives.append(answer)
            found = len(representatives) - 1
        ids.append(found)
    return ids


def semantic_entropy(cluster_ids: Sequence[int]) -> float:
    """H = -sum_j p_j ln p_j with p_j the share of samples in cluster j (0 for one cluster)."""
    n = len(cluster_ids)
    if n == 0:
        return 0.0
    counts = [cluster_ids.count(c) for c in set(cluster_ids)]
    return -sum(m / n * math.log(m / n) for m in counts)


def majority_index(answers: Sequence[str | None], cluster_ids: Sequence[int]) -> int | None:
    """Index of a sample in the largest cluster of parsed answers; ties go to the cluster seen first.
    None when no sample has an answer."""
    sizes: dict[int, int] = {}
    first: dict[int, int] = {}
    for i, (answer, c) in enumerate(zip(answers, cluster_ids)):
        if answer is None:
            continue
        sizes[c] = sizes.get(c, 0) + 1
        first.setdefault(c, i)
    if not sizes:
        return None
    best = max(sizes, key=lambda c: (sizes[c], -first[c]))
    return first[best]


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], cluster_ids: Sequence[int]) -> bool:
    """The majority answer is correct (all samples of a cluster share correctness up to the grader)."""
    i = majority_index(answers, cluster_ids)
    return i is not None and bool(correct[i])


def pass_k_values(k: int) -> list[int]:
    """Which pass@j to report for k samples: 1, 2, 4, ... up to k, and k itself."""
    values, j = [], 1
    while j < k:
        values.append(j)
        j *= 2
    return values + [k]


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
