"""The grader on known (completion, gold) pairs, with the reward engine's extraction and equivalence."""

from __future__ import annotations

import pytest

from empo_trainer.evaluation.grading import choice_letter, default_matcher, grade


@pytest.fixture(scope="module")
def matcher():
    return default_matcher()


@pytest.mark.parametrize("completion, gold, extracted, correct", [
    ("so the answer is \\boxed{18}.", ["18"], "18", True),
    ("\\boxed{17} wait, no: \\boxed{18}", ["18"], "18", True),            # the last box counts
    ("\\boxed{\\frac{1}{2}}", ["0.5"], "\\frac{1}{2}", True),               # symbolic = numeric
    ("\\boxed{\\dfrac{\\pi}{2}}", ["\\frac{\\pi}{2}"], "\\dfrac{\\pi}{2}", True),
    ("\\boxed{1,000}", ["1000"], "1,000", True),
    ("\\boxed{19}", ["18"], "19", False),
    ("The answer is 18.", ["18"], None, False),                             # no box, no answer
    ("\\boxed{x^{2}+1}", ["1+x^2"], "x^{2}+1", True),
    ("\\boxed{27}", ["26", "27"], "27", True),                              # any gold answer counts
    # MATH500 gold answers written as mixed numbers: a mixed number, never a product
    ("\\boxed{\\frac{9}{5}}", ["1\\frac{4}{5}"], "\\frac{9}{5}", True),
    ("\\boxed{\\frac{4}{5}}", ["1\\frac{4}{5}"], "\\frac{4}{5}", False),
    ("\\boxed{137.5}", ["137 \\frac{1}{2}"], "137.5", True),
    ("\\boxed{\\frac{137}{2}}", ["137 \\frac{1}{2}"], "\\frac{137}{2}", False),
])
def test_math_pairs(matcher, completion, gold, extracted, correct):
    g = grade(matcher, completion, gold, "math")
    assert (g.extracted, g.correct) == (extracted, correct)


@pytest.mark.parametrize("completion, gold, correct", [
    ("\\boxed{C}", ["C"], True),
    ("\\boxed{(c)}", ["C"], True),
    ("\\boxed{\\text{B}}", ["B"], True),
    ("\\boxed{B. 42}", ["B"], True),
    ("\\boxed{D}", ["C"], False),
    ("\\boxed{42}", ["C"], False),
])
def test_choice_pairs(matcher, completion, gold, correct):
    assert grade(matcher, completion, gold, "choice").correct is correct


@pytest.mark.parametrize("answer, letter", [("A", "A"), ("(j)", "J"), ("Option E", "E"), ("Apple", None), (None, None),
                                            ("K", None)])
def test_choice_letter(answer, letter):
    assert choice_letter(answer) == letter


@pytest.mark.parametrize("a, b", [("0.5", "\\frac{1}{2}"), ("1000", "1001"), ("x^2+1", "1+x^{2}"), ("(1,2)", "(1, 2.0)"),
                                  ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"), ("dog", "god"), ("5 cm", "5")])
def test_grader_agrees_with_the_reward_engine(matcher, a, b):
    # Evaluation and training must agree on what "the same answer" is.
    from empo_trainer.rewards.math_equivalence import MathEquivalence

    assert matcher.equivalent(a, b) == MathEquivalence().equivalent(a, b)
    assert matcher.extract(f"so \\boxed{{{a}}}") == a


def test_runs_trained_with_answer_fallbacks_are_graded_with_them():
    from empo_trainer.evaluation.grading import default_matcher, grade

    assert not grade(default_matcher(), "6 + 1 = 7", ["7"], "number").correct  # the paper's: \boxed{} only
    assert grade(default_matcher(fallbacks=True), "6 + 1 = 7", ["7"], "number").correct
    assert grade(default_matcher(fallbacks=True), "The answer is 8.", ["7"], "number").extracted == "8"
