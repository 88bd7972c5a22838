"""Grading a completion against gold answers, with the reward engine's extraction and equivalence.

Evaluation must agree with training about what "the same answer" means, so the grader does not
define equivalence itself: it asks an `AnswerMatcher` (two functions), by default the reward
engine's (`empo_trainer.rewards`). Multiple-choice benchmarks (MMLU-Pro, GPQA) compare the option
letter in the last \\boxed{} instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence


class AnswerMatcher(Protocol):
    def extract(self, text: str) -> str | None: ...
    def equivalent(self, a: str, b: str) -> bool: ...


@dataclass(frozen=True)
class FunctionMatcher:
    """An AnswerMatcher made of two plain functions."""

    extract_fn: Callable[[str], str | None]
    equivalent_fn: Callable[[str, str], bool]

    def extract(self, text: str) -> str | None:
        return self.extract_fn(text)

    def equivalent(self, a: str, b: str) -> bool:
        return self.equivalent_fn(a, b)


def default_matcher(timeout_s: float = 2.0, fallbacks: bool = False) -> AnswerMatcher:
    """The reward engine's extraction (last \\boxed{}; with `fallbacks`, also "The answer is X" and
    the last number, as a run with algorithm.answerFallbacks trains) and math equivalence (canonical
    strings, numbers within 2e-3, then math-verify with a per-call timeout in a worker process)."""
    from functools import partial

    from ..rewards.extraction import extract_answer
    from ..rewards.math_equivalence import MathEquivalence

    return FunctionMatcher(partial(extract_answer, fallbacks=fallbacks), MathEquivalence(timeout_s=timeout_s).equivalent)


# A letter answer as models write it: "C", "(C)", "C.", "\text{C}", "C) 42", "Option C".
_LETTER = re.compile(r"^(?:\\text\{|\\textbf\{|\\mathrm\{|option\s*|answer\s*:?\s*)?\(?([A-Ja-j])\)?[}.:)]?(?:\s|$)", re.I)


def choice_letter(answer: str | None) -> str | None:
    """The option letter inside an extracted answer, upper-cased; None if it is not a letter."""
    if answer is None:
        return None
    m = _LETTER.match(answer.strip())
    return m.group(1).upper() if m else None


@dataclass(frozen=True)
class Grade:
    extracted: str | None
    correct: bool


def grade(matcher: AnswerMatcher, completion: str, gold: Sequence[str], kind: str) -> Grade:
    """Extract the completion's final answer and check it against any of the gold answers."""
    extracted = matcher.extract(completion)
    if extracted is None or not gold:
        return Grade(extracted, False)
    if kind == "choice":
        letter = choice_letter(extracted)
        return Grade(extracted, letter is not None and letter in {g.strip().upper() for g in gold})
    return Grade(extracted, any(matcher.equivalent(extracted, g) for g in gold))
