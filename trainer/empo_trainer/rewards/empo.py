"""EMPO's reward for one group of G answers to the same prompt (docs/algorithm.md, "From completions
to a gradient": reward).

Pure functions: answers and their cluster ids in, rewards and group statistics out.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

NO_ANSWER_FREE_FORM = -0.5  # free-form: a completion without an answer is penalised
COPY_ROUGE_L_PRECISION = 0.8  # free-form: an answer this close to the question is a copy
# Shorter answers that occur in the question (a name, a number, "yes") are legitimate, not copies.
COPY_MIN_WORDS = 4
_EPS = 1e-9  # H / ln G of an all-distinct group must read as exactly 1, not 0.9999999


@dataclass(frozen=True)
class GroupFilter:
    """Keep a group if low <= H / ln G < high and max_j p_j >= min_majority (docs/algorithm.md, "From
    completions to a gradient": group filter)."""

    low: float = 0.0
    high: float = 1.0
    min_majority: float = 0.0

    def keeps(self, normalized_entropy: float, majority_ratio: float) -> bool:
        in_band = self.low - _EPS <= normalized_entropy < self.high - _EPS
        return in_band and majority_ratio >= self.min_majority - _EPS


@dataclass(frozen=True)
class GroupResult:
    answers: list[str | None]  # extracted answers; None = unanswered
    cluster_ids: list[int]  # unanswered and copied answers are singleton clusters
    rewards: list[float]
    entropy: float  # H in nats
    normalized_entropy: float  # H / ln G
    majority_ratio: float  # max_j p_j
    filtered: bool  # outside the group filter: all rewards equal, zero advantage
    unanswered: int
    majority_answer: str | None  # first member of the largest answered cluster
    num_clusters: int

    def to_json(self) -> dict:
        return asdict(self)


def semantic_entropy(cluster_sizes: Sequence[int]) -> float:
    """H = -sum_j p_j ln p_j with p_j = |c_j| / G."""
    total = sum(cluster_sizes)
    return -math.fsum((n / total) * math.log(n / total) for n in cluster_sizes if n) if total else 0.0


def normalized_entropy(entropy: float, group_size: int) -> float:
    """H / ln G in [0, 1]; 0 for G <= 1."""
    # rounded so that an all-distinct group reads exactly 1.0 (ln G / ln G), not 0.9999999999999998
    return round(min(1.0, entropy / math.log(group_size)), 12) if group_size > 1 else 0.0


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rouge_l_precision(candidate: str, reference: str) -> float:
    """LCS(candidate, reference) / len(candidate) over lower-cased word tokens."""
    c, r = _tokens(candidate), _tokens(reference)
    if not c or not r:
        return 0.0
    previous = [0] * (len(r) + 1)
    for x in c:
        current = [0]
        for j, y in enumerate(r):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1] / len(c)


def copies_question(answer: str, question: str) -> bool:
    """The answer restates the question: a case-insensitive substring, or ROUGE-L precision > 0.8
    (answers of at least COPY_MIN_WORDS words)."""
    if len(_tokens(answer)) < COPY_MIN_WORDS:
        return False
    a = answer.strip().lower()
    return a in question.lower() or rouge_l_precision(answer, question) > COPY_ROUGE_L_PRECISION


def full_cluster_ids(answered_ids: Sequence[int | None]) -> list[int]:
    """Cluster ids for the whole group: answered clusters keep theirs, each None gets a fresh singleton id."""
    next_id = max((i for i in answered_ids if i is not None), default=-1) + 1
    out = []
    for cid in answered_ids:
        if cid is None:
            out.append(next_id)
            next_id += 1
        else:
            out.append(cid)
    return out


def score_group(
    answers: Sequence[str | None],
    answered_ids: Sequence[int | None],
    *,
    unanswered: str = "zero",
    group_filter: GroupFilter = GroupFilter(),
    free_form: bool = False,
    copied: Sequence[bool] | None = None,
) -> GroupResult:
    """EMPO rewards r_i = |c(o_i)| / G for one group.

    answered_ids: the equivalence backend's cluster id per answer, None for an unanswered (or copied)
    one. unanswered: "zero" (reward 0) or "singleton" (1/G); either way it is its own cluster.
    free_form: no answer -> -0.5, a copy of the question -> 0 (copied marks them).
    """
    group_size = len(answers)
    copied = list(copied) if copied is not None else [False] * group_size
    ids = full_cluster_ids(answered_ids)
    sizes = Counter(ids)
    entropy = semantic_entropy(list(sizes.values()))
    h_norm = normalized_entropy(entropy, group_size)
    majority_ratio = max(sizes.values()) / group_size if group_size else 0.0
    answered_sizes = Counter(cid for cid, raw in zip(ids, answered_ids) if raw is not None)
    majority_answer = None
    if answered_sizes:
        top = max(answered_sizes.values())
        majority_id = min(cid for cid, n in answered_sizes.items() if n == top)  # ties: the earliest cluster
        majority_answer = answers[ids.index(majority_id)]

    rewards = []
    for answer, cid, raw, is_copy in zip(answers, ids, answered_ids, copied):
        if free_form and answer is None:
            rewards.append(NO_ANSWER_FREE_FORM)
        elif free_form and is_copy:
            rewards.append(0.0)
        elif raw is None:
            rewards.append(1.0 / group_size if unanswered == "singleton" else 0.0)
        else:
            rewards.append(sizes[cid] / group_size)  # r_i = p(c(o_i))

    filtered = not group_filter.keeps(h_norm, majority_ratio)
    if filtered:
        rewards = [0.0] * group_size  # all equal: GRPO's advantage is 0 for the whole group
    return GroupResult(
        answers=list(answers), cluster_ids=ids, rewards=rewards, entropy=entropy, normalized_entropy=h_norm,
        majority_ratio=majority_ratio, filtered=filtered, unanswered=sum(a is None for a in answers),
        majority_answer=majority_answer, num_clusters=len(sizes),
    )
