"""Baseline rewards on EMPO's group interface (same inputs, same GroupResult), for comparisons.

ttrl: 1 if the answer is in the majority cluster (majority vote as pseudo-label), else 0.
random: 1 or 0 with probability 1/2 each ("spurious rewards").
format: 1 if an answer could be extracted, else 0.
gold: 1 if the answer is equivalent to the gold answer (supervised GRPO; needs labels).
The group filter is EMPO's and does not apply here; group statistics are reported all the same.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from .empo import GroupResult


def ttrl_rewards(result: GroupResult) -> list[float]:
    if result.majority_answer is None:
        return [0.0] * len(result.answers)
    majority_id = result.cluster_ids[result.answers.index(result.majority_answer)]
    return [1.0 if a is not None and cid == majority_id else 0.0 for a, cid in zip(result.answers, result.cluster_ids)]


def random_rewards(group_size: int, rng: random.Random) -> list[float]:
    return [float(rng.random() < 0.5) for _ in range(group_size)]


def format_rewards(answers: Sequence[str | None]) -> list[float]:
    return [0.0 if a is None else 1.0 for a in answers]


def gold_rewards(answers: Sequence[str | None], gold_cluster: Sequence[bool]) -> list[float]:
    """gold_cluster[i]: answer i was clustered with the gold answer."""
    return [1.0 if a is not None and same else 0.0 for a, same in zip(answers, gold_cluster)]


def with_rewards(result: GroupResult, rewards: list[float]) -> GroupResult:
    """The same group statistics with a baseline's rewards (never filtered)."""
    return replace(result, rewards=rewards, filtered=False)
