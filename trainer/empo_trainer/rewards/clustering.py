"""Greedy clustering of answers by an equivalence, and the interface every backend implements."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class Equivalence(Protocol):
    """Groups answers by meaning (math, embedding, judge)."""

    def cluster_groups(self, groups: Sequence[Sequence[str]], questions: Sequence[str] | None = None) -> list[list[int]]:
        """For each group of answers, one cluster id per answer: 0, 1, ... in order of first appearance.

        Backends see all groups of a step at once so they can batch (embeddings, judge calls).
        """
        ...


def greedy_clusters(items: Sequence[T], equivalent: Callable[[T, T], bool]) -> list[int]:
    """Each item joins the first cluster whose first member it is equivalent to, else opens a new one."""
    representatives: list[T] = []
    ids: list[int] = []
    for item in items:
        for cid, rep in enumerate(representatives):
            if equivalent(rep, item):
                ids.append(cid)
                break
        else:
            representatives.append(item)
            ids.append(len(representatives) - 1)
    return ids


def greedy_clusters_by_key(items: Sequence[T], key: Callable[[T], K], equivalent: Callable[[K, K], bool]) -> list[int]:
    """greedy_clusters over distinct keys only: items with equal keys are equivalent by construction,
    so the (expensive) equivalence runs between distinct keys, at most once per pair."""
    keys = [key(item) for item in items]
    distinct = list(dict.fromkeys(keys))  # first-appearance order keeps cluster ids stable
    distinct_ids = dict(zip(distinct, greedy_clusters(distinct, equivalent)))
    return [distinct_ids[k] for k in keys]


def clusters_from_matrix(n: int, equivalent: Callable[[int, int], bool]) -> list[int]:
    """greedy_clusters over indices 0..n-1 with a precomputed pairwise decision (rep index, item index)."""
    return greedy_clusters(list(range(n)), equivalent)
