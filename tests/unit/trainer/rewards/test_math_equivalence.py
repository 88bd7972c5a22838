import threading
import time

import pytest

from empo_trainer.rewards.math_equivalence import MathEquivalence, canonicalize, numbers_close
from empo_trainer.rewards.symbolic import SymbolicChecker

EQUIVALENT = [
    ("0.5", "\\frac{1}{2}"),
    ("0.5", "1/2"),
    ("\\dfrac12", "\\frac{1}{2}"),
    ("\\tfrac{1}{2}", ".5"),
    ("x = 3", "3"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("(3, \\pi/2)", "\\left(3,\\frac{\\pi}{2}\\right)"),
    ("[1, \\frac12)", "[1,0.5)"),
    ("(-\\infty, 2]", "(-∞,2]"),
    ("90^\\circ", "90"),
    ("50\\%", "50"),
    ("5\\text{ cm}", "5"),
    ("1,000", "1000"),
    ("\\$5.00", "5"),
    ("\\text{(B)}", "B"),
    ("0.333", "\\frac{1}{3}"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt2}"),
    ("2x+1", "1+2x"),
    ("\\text{Monday}", "monday"),
    ("x = 10,\\!080", "10080"),
    ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", "\\begin{pmatrix}-1&0\\\\0&-1\\end{pmatrix}"),
    ("2\\sqrt{5}", "\\sqrt{20}"),
    ("-\\frac{\\pi}{6}", "-0.5236"),
    # mixed numbers (MATH500 has gold answers 1\frac{4}{5} and 137 \frac{1}{2})
    ("1\\frac{4}{5}", "\\frac{9}{5}"),
    ("137 \\frac{1}{2}", "137.5"),
    ("-2\\frac13", "-\\frac{7}{3}"),
    ("1 4/5", "1.8"),
    # units with exponents, after the number
    ("5 \\text{ cm}^2", "5"),
    ("12\\text{ m}^{3}", "12"),
    ("8 \\mbox{square units}", "8"),
    # percent, as math-verify grades it: the number without its sign, and its value
    ("10\\%", "0.1"),
    ("10\\%", "10"),
    ("12.5 percent", "\\frac{1}{8}"),
    ("50\\%", "50.0\\%"),
]
DIFFERENT = [
    ("1000", "1001"),  # integers never match within tolerance
    ("0.5", "0.6"),
    ("[1,2)", "(1,2]"),  # open and closed ends differ
    ("(1,2)", "(2,1)"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}"),
    ("dog", "god"),  # sympy would read both as d*o*g
    ("x+1", "x+2"),
    ("2\\sqrt{5}", "5"),  # closed-form constants compare by value, without sympy
    ("6+9i", "6"),
    ("(3,4)", "7"),
    ("x^2+1", "2"),
    ("\\pi i", "\\pi"),
    ("1\\frac{4}{5}", "\\frac{4}{5}"),  # a mixed number, not the product 1 * 4/5
    ("137 \\frac{1}{2}", "\\frac{137}{2}"),
    ("1 4/5", "14/5"),
    ("3s^2", "3"),  # a one-letter unit with an exponent is a monomial
    ("10", "0.1"),  # without a percent sign these are different numbers
    ("10\\%", "1000"),
    ("10\\%", "20\\%"),
]


@pytest.mark.parametrize("a, b", [("2\\sqrt{5}", "5"), ("6+9i", "9901"), ("(5,\\infty)", "4"), ("3R^2", "42"),
                                  ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "3"), ("2516_8", "5")])
def test_answers_of_different_shapes_skip_the_symbolic_check(a, b):
    eq = MathEquivalence(checker=SymbolicChecker(max_workers=1))
    assert not eq.equivalent(a, b) and eq.symbolic_calls == 0



# A fine-tuned SmolLM2 answered ASDiv with "4 because five potatoes is reduced to four potatoes,
# leaving the three unused ones": the unit-stripping pattern backtracked through every split of
# every word and grading hung for over ten minutes. Such answers are not units and stay as they are.
@pytest.mark.timeout(20)
@pytest.mark.parametrize("answer", [
    "4 because five potatoes is reduced to four potatoes, leaving the three unused ones",
    "12 " + "apples and oranges " * 40 + "!",
    "5 cm " + "x" * 2000 + ".",
])
def test_long_answers_that_are_not_units_are_graded_at_once(math_eq, answer):
    assert canonicalize(answer) == canonicalize(answer + " ")  # reached: it did not hang
    assert not math_eq.equivalent(answer, answer.split()[0])


@pytest.mark.parametrize("a, b", EQUIVALENT)
def test_equivalent_forms(math_eq, a, b):
    assert math_eq.equivalent(a, b) and math_eq.equivalent(b, a)


@pytest.mark.parametrize("a, b", DIFFERENT)
def test_different_answers(math_eq, a, b):
    assert not math_eq.equivalent(a, b)


@pytest.mark.parametrize("forms", [
    ["0.5", "\\frac{1}{2}", "1/2", "\\dfrac12", "\\frac12", "0.50"],
    ["x = 3", "3", "3.0", "x=3"],
])
def test_plain_rewritings_share_one_canonical_form(forms):
    # the hash grouping, not the symbolic check, merges these
    assert len({canonicalize(f) for f in forms}) == 1


def test_identical_canonical_forms_skip_the_symbolic_check():
    eq = MathEquivalence(checker=SymbolicChecker(max_workers=1))
    ids = eq.cluster(["0.5", "1/2", "\\frac{1}{2}", "7", "7.0", "x=7", "\\dfrac12"])
    assert ids == [0, 0, 0, 1, 1, 1, 0]
    assert eq.symbolic_calls == 0


def test_symbolic_results_are_cached(math_eq):
    eq = MathEquivalence(checker=math_eq.checker)
    answers = ["\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}", "\\sqrt{8}/4"] * 3
    assert eq.cluster(answers) == [0, 0, 0] * 3
    calls = eq.symbolic_calls
    assert eq.cluster(answers) == [0, 0, 0] * 3
    assert eq.symbolic_calls == calls <= 2


def test_relative_tolerance():
    from fractions import Fraction

    assert numbers_close(Fraction("0.3333"), Fraction(1, 3))
    assert not numbers_close(Fraction("0.33"), Fraction(1, 3))


def test_timeout_from_a_non_main_thread():
    """math-verify's SIGALRM timeout fails off the main thread; ours must hold anywhere."""
    checker = SymbolicChecker(max_workers=1)
    try:
        eq = MathEquivalence(timeout_s=1.0, checker=checker)
        assert eq.equivalent("\\sqrt{4}", "2")  # start the worker before timing anything
        out = {}

        def check():
            started = time.monotonic()
            out["equal"] = eq.equivalent("10^{10^{10}}", "5^{5^{5^{5}}}")  # sympy stalls inside C on these
            out["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=check)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert out["equal"] is False and out["seconds"] < 5
        assert checker.timeouts == 1
        # the stuck worker was replaced: the next check still works, from a thread pool too
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            assert list(pool.map(lambda p: eq.equivalent(*p), [("\\sqrt{9}", "3"), ("2^{10}", "1000")])) == [True, False]
    finally:
        checker.close()
