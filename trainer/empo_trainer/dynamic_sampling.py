"""Dynamic sampling (algorithm.filteredGroups: resample): groups outside the group filter are
replaced by groups of new prompts, as the verl-era EMPO code and DAPO do, instead of being kept
with equal rewards (zero advantage, no gradient).

The rollout function scores each fresh group with the run's reward engine, draws replacement
prompts from the training set for the groups the filter drops, samples them, and repeats for at
most algorithm.resampleRounds rounds; slots still unfilled keep their original group (and its zero
advantage). Draws are seeded by the step and the batch, so a resumed run samples the same prompts.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Refilled:
    batch: list  # one entry per slot, same length as the input
    replaced: int  # slots now holding a resampled group
    rounds: int  # sampling rounds used
    still_filtered: int  # slots whose group is outside the filter after the last round


def refill(batch: Sequence[T], keeps: Callable[[list[T]], list[bool]], sample: Callable[[int, int], list[T]],
           rounds: int) -> Refilled:
    """Pure: replace each entry keeps() rejects by a fresh one it accepts, in order, sampling
    len(missing) new entries per round (sample(n, round)) for at most `rounds` rounds."""
    out = list(batch)
    missing = [i for i, ok in enumerate(keeps(out)) if not ok]
    replaced = used = 0
    while missing and used < rounds:
        fresh = sample(len(missing), used)
        used += 1
        accepted = [g for g, ok in zip(fresh, keeps(fresh)) if ok]
        for slot, group in zip(missing, accepted):
            out[slot] = group
        replaced += min(len(missing), len(accepted))
        missing = missing[len(accepted):]
    return Refilled(out, replaced, used, len(missing))


def draw_indices(pool_size: int, n: int, seed: int, step: int, round_: int, batch_digest: str) -> list[int]:
    """n distinct example indices (fewer if the pool is smaller), the same for the same arguments."""
    key = hashlib.sha256(f"{seed}:{step}:{round_}:{batch_digest}".encode()).hexdigest()
    return random.Random(int(key[:16], 16)).sample(range(pool_size), min(n, pool_size))


def _key(prompt: Any) -> str:
    return json.dumps(prompt, sort_keys=True)


@dataclass
class Candidate:
    example: dict[str, Any]  # the training row: prompt, question, answer
    generation: Any  # sampling.Generation


class GroupRefill:
    """The rollout function's dynamic sampling: examples are the training rows (prompt, question,
    answer); engine is the run's RewardEngine (its group filter decides)."""

    def __init__(self, spec: Any, examples: Sequence[dict[str, Any]], engine: Any) -> None:
        self.spec = spec
        self.examples = list(examples)
        self.engine = engine
        self._by_prompt = {_key(e["prompt"]): e for e in self.examples}

    def _keeps(self, candidates: list[Candidate]) -> list[bool]:
        if not candidates:
            return []
        results = self.engine.score(
            [c.example["question"] for c in candidates], [c.generation.texts for c in candidates],
            finished_groups=[c.generation.finished or [True] * len(c.generation.texts) for c in candidates])
        return [not r.filtered for r in results]

    def __call__(self, prompts: Sequence[Any], generations: Sequence[Any],
                 generate: Callable[[list[Any], Any], list[Any]], params: Any, step: int,
                 batch_digest: str) -> Refilled:
        """The batch after refilling (one Candidate per prompt slot) and what happened."""
        from dataclasses import replace

        batch = []
        for p, g in zip(prompts, generations):
            row = self._by_prompt.get(_key(p))
            if row is None:  # its question and gold answer would be lost; never guess them
                raise RuntimeError(f"dynamic sampling: prompt {str(p)[:80]!r} is not among the training rows")
            batch.append(Candidate(row, g))

        def sample(n: int, round_: int) -> list[Candidate]:
            rows = [self.examples[i] for i in draw_indices(len(self.examples), n, self.spec.algorithm.seed, step,
                                                           round_, batch_digest)]
            fresh = generate([r["prompt"] for r in rows], replace(params, seed=(params.seed or 0) + 7919 * (round_ + 1)))
            return [Candidate(r, g) for r, g in zip(rows, fresh)]

        return refill(batch, self._keeps, sample, self.spec.algorithm.resample_rounds)
