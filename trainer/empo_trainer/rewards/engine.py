"""The reward engine: an EmpoRunSpec's choices (task, clustering, filter, reward kind) applied to
groups of completions. Extraction, clustering and scoring are the pure pieces it strings together."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from empo_api.models import EmpoRunSpec

from . import baselines
from .clustering import Equivalence
from .empo import GroupFilter, GroupResult, copies_question, score_group
from .extraction import extract_answer, last_boxed, strip_wrappers


def build_equivalence(spec: EmpoRunSpec) -> Equivalence:
    """The clustering backend spec.algorithm.clustering selects (math / embedding / judge)."""
    clustering = spec.algorithm.clustering
    method = spec.clustering_method()
    if method == "math":
        from .math_equivalence import MathEquivalence

        return MathEquivalence(timeout_s=clustering.symbolic_timeout_seconds)
    if method == "embedding":
        from .freeform_equivalence import EmbeddingEquivalence

        return EmbeddingEquivalence(threshold=clustering.threshold, model_name=clustering.embedding_model)
    if method == "judge":
        from .freeform_equivalence import load_judge

        return load_judge(clustering.judge_model, both_directions=clustering.judge_both_directions)
    raise ValueError(f"algorithm.clustering.method {method!r}: allowed are math, embedding, judge")


def gold_answer(gold: Any) -> str | None:
    """A dataset's gold answer as an answer string (lists take their first item; \\boxed{} is unwrapped)."""
    if isinstance(gold, (list, tuple)):
        gold = gold[0] if gold else None
    if gold is None:
        return None
    text = str(gold)
    boxed = last_boxed(text)
    answer = strip_wrappers(boxed if boxed is not None else text)
    return answer or None


class RewardEngine:
    """Scores groups of completions as the spec says; one instance per run (it keeps caches and models)."""

    def __init__(self, spec: EmpoRunSpec, equivalence: Equivalence | None = None) -> None:
        algorithm = spec.algorithm
        self.spec = spec
        self.kind = algorithm.reward
        self.free_form = spec.task == "free-form"
        self.fallbacks = algorithm.answer_fallbacks
        self.unanswered = algorithm.unanswered
        self.group_filter = GroupFilter(algorithm.entropy_band.low, algorithm.entropy_band.high, algorithm.min_majority)
        self.rng = random.Random(algorithm.seed)
        self._equivalence = equivalence

    @property
    def equivalence(self) -> Equivalence:
        if self._equivalence is None:
            self._equivalence = build_equivalence(self.spec)
        return self._equivalence

    def extract(self, completion: str, finished: bool = True) -> str | None:
        return extract_answer(completion, fallbacks=self.fallbacks, finished=finished)

    def score(self, questions: Sequence[str], completion_groups: Sequence[Sequence[str]],
              golds: Sequence[Any] | None = None,
              finished_groups: Sequence[Sequence[bool]] | None = None) -> list[GroupResult]:
        """One GroupResult per prompt. golds are used only by the 'gold' reward (and label accuracy);
        finished_groups marks completions that ended on their own (not cut at the token limit)."""
        if finished_groups is None:
            finished_groups = [[True] * len(group) for group in completion_groups]
        answer_groups = [[self.extract(c, f) for c, f in zip(group, done)]
                         for group, done in zip(completion_groups, finished_groups)]
        copied_groups = [
            [self.free_form and a is not None and copies_question(a, q) for a in answers]
            for answers, q in zip(answer_groups, questions)
        ]
        clusterable = [[a for a, c in zip(answers, copied) if a is not None and not c]
                       for answers, copied in zip(answer_groups, copied_groups)]
        clustered = self.equivalence.cluster_groups(clusterable, list(questions))
        results = []
        for answers, copied, ids in zip(answer_groups, copied_groups, clustered):
            it = iter(ids)
            answered_ids = [None if a is None or c else next(it) for a, c in zip(answers, copied)]
            results.append(score_group(answers, answered_ids, unanswered=self.unanswered,
                                       group_filter=self.group_filter, free_form=self.free_form, copied=copied))
        return self._baseline(results, questions, golds)

    def _baseline(self, results: list[GroupResult], questions: Sequence[str],
                  golds: Sequence[Any] | None) -> list[GroupResult]:
        if self.kind == "empo":
            return results
        if self.kind == "ttrl":
            return [baselines.with_rewards(r, baselines.ttrl_rewards(r)) for r in results]
        if self.kind == "random":
            return [baselines.with_rewards(r, baselines.random_rewards(len(r.answers), self.rng)) for r in results]
        if self.kind == "format":
            return [baselines.with_rewards(r, baselines.format_rewards(r.answers)) for r in results]
        if self.kind == "gold":
            if golds is None:
                raise ValueError("algorithm.reward gold needs gold answers (set dataset.answerField)")
            same = self.same_as_gold([list(r.answers) for r in results], golds, questions)
            return [baselines.with_rewards(r, baselines.gold_rewards(r.answers, s)) for r, s in zip(results, same)]
        raise ValueError(f"algorithm.reward {self.kind!r}: allowed are empo, ttrl, random, format, gold")

    def same_as_gold(self, answer_groups: Sequence[Sequence[str | None]], golds: Sequence[Any],
                     questions: Sequence[str] | None = None) -> list[list[bool]]:
        """For each group, whether each answer is equivalent to that group's gold answer (batched)."""
        gold_texts = [gold_answer(g) for g in golds]
        lists, where = [], []
        for answers, gold in zip(answer_groups, gold_texts):
            if gold is None:
                where.append(None)
                continue
            present = [a for a in answers if a is not None]
            where.append(len(lists))
            lists.append([gold] + present)  # gold first: greedy compares everything against it
        ids = self.equivalence.cluster_groups(lists, [questions[i] for i, w in enumerate(where) if w is not None]
                                              if questions is not None else None) if lists else []
        out = []
        for answers, w in zip(answer_groups, where):
            if w is None:
                out.append([False] * len(answers))
                continue
            it = iter(ids[w][1:])
            out.append([a is not None and next(it) == 0 for a in answers])
        return out

    def label_correct(self, results: Sequence[GroupResult], golds: Sequence[Any],
                      questions: Sequence[str] | None = None) -> list[bool | None]:
        """Whether each group's majority answer matches its gold answer (None without a gold answer).

        Monitoring only: never part of the reward."""
        same = self.same_as_gold([[r.majority_answer] for r in results], golds, questions)
        return [None if gold_answer(g) is None else s[0] for s, g in zip(same, golds)]

    def step_stats(self, results: Sequence[GroupResult], golds: Sequence[Any] | None = None,
                   questions: Sequence[str] | None = None) -> dict[str, float]:
        """Per-step monitoring figures (metrics.jsonl keys)."""
        if not results:
            return {}
        rewards = [x for r in results for x in r.rewards]
        n = len(results)
        mean = math.fsum(rewards) / len(rewards)
        stats = {
            "reward_mean": mean,
            "reward_std": math.sqrt(math.fsum((x - mean) ** 2 for x in rewards) / max(1, len(rewards) - 1)),
            "semantic_entropy": math.fsum(r.entropy for r in results) / n,
            "semantic_entropy_normalized": math.fsum(r.normalized_entropy for r in results) / n,
            "filtered_fraction": sum(r.filtered for r in results) / n,
            "majority_ratio": math.fsum(r.majority_ratio for r in results) / n,
            "unanswered_fraction": sum(r.unanswered for r in results) / max(1, sum(len(r.answers) for r in results)),
            "clusters_mean": sum(r.num_clusters for r in results) / n,
        }
        if golds is not None and any(gold_answer(g) is not None for g in golds):
            labelled = [c for c in self.label_correct(results, golds, questions) if c is not None]
            stats["label_accuracy"] = sum(labelled) / len(labelled)
        return stats
