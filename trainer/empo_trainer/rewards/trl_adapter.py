"""EMPO (or a baseline) as a TRL GRPOTrainer reward function.

TRL 1.16 calls reward_fn(prompts=..., completions=..., completion_ids=..., **columns, trainer_state=...,
log_extra=..., log_metric=...), where consecutive runs of G = num_generations samples share a prompt
and the dataset's other columns ("question", "answer", ...) arrive as lists, one item per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from empo_api.models import EmpoRunSpec

from .clustering import Equivalence
from .engine import RewardEngine


def completion_text(completion: Any) -> str:
    """A completion as text: TRL passes strings, or chat messages [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, (list, tuple)):
        return "".join(completion_text(m) for m in completion if not isinstance(m, dict) or m.get("role", "assistant") == "assistant")
    return str(completion)


def prompt_question(prompt: Any) -> str:
    """The question inside a prompt: the text, or the last user message's content."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            return str(users[-1].get("content") or "")
    return str(prompt)


def split_groups(n: int, group_size: int) -> list[range]:
    """Consecutive groups of group_size samples, one prompt each: TRL's layout. Whole groups are the
    spec validator's check (EmpoRunSpec._split_batch); that a group's copies share one prompt, the
    rollout engine's (rollout_engine._one_per_group), before any of them was sampled."""
    return [range(s, s + group_size) for s in range(0, n, group_size)]


def build_reward_function(spec: EmpoRunSpec, equivalence: Equivalence | None = None) -> Callable[..., list[float]]:
    """f(prompts, completions, **kwargs) -> list[float] for GRPOTrainer(reward_funcs=[f]).

    f.last_stats holds the latest call's step statistics (see RewardEngine.step_stats, plus "step");
    f.last_results the GroupResults. The gold column (dataset.answerField, as column "answer") is used
    for label accuracy only, and as the reward only when algorithm.reward is gold.
    """
    engine = RewardEngine(spec, equivalence)
    group_size = spec.algorithm.num_generations

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        groups = split_groups(len(completions), group_size)
        questions_column = kwargs.get("question")
        questions = [str(questions_column[g.start]) if questions_column is not None else prompt_question(prompts[g.start])
                     for g in groups]
        texts = [completion_text(c) for c in completions]
        golds_column = kwargs.get("answer")
        golds = [golds_column[g.start] for g in groups] if golds_column is not None else None
        finished_column = kwargs.get("finished")  # from our rollout function; absent under TRL's own generation
        finished = ([[bool(finished_column[i]) for i in g] for g in groups] if finished_column is not None else None)
        results = engine.score(questions, [[texts[i] for i in g] for g in groups], golds, finished)
        stats = engine.step_stats(results, golds, questions)
        state = kwargs.get("trainer_state")
        if state is not None:
            stats["step"] = int(getattr(state, "global_step", 0))
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for key, value in stats.items():
                if key != "step":
                    log_metric(f"empo/{key}", float(value))
        log_extra = kwargs.get("log_extra")
        if log_extra is not None:  # shown in TRL's completions table next to each sample
            log_extra("answer_extracted", [a if a is not None else "" for r in results for a in r.answers])
            log_extra("cluster", [c for r in results for c in r.cluster_ids])
        reward.last_stats = stats
        reward.last_results = results
        return [x for r in results for x in r.rewards]

    reward.__name__ = f"{spec.algorithm.reward}_reward"  # TRL logs rewards/<name>/mean
    reward.last_stats = {}
    reward.last_results = []
    reward.engine = engine
    return reward
