"""EMPO rewards: answer extraction, semantic clustering, semantic entropy, group filter, baselines.

Light to import: the heavy backends (sympy workers, sentence-transformers, judge LLMs) load on use.
"""

from .empo import GroupFilter, GroupResult, score_group, semantic_entropy
from .extraction import extract_answer, last_boxed


def build_reward_function(spec, equivalence=None):
    """See trl_adapter.build_reward_function."""
    from .trl_adapter import build_reward_function as build

    return build(spec, equivalence)


__all__ = ["GroupFilter", "GroupResult", "build_reward_function", "extract_answer", "last_boxed", "score_group",
           "semantic_entropy"]
