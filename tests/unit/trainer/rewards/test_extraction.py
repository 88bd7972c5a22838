import pytest

from empo_trainer.rewards.extraction import extract_answer, last_boxed, strip_wrappers


@pytest.mark.parametrize("text, expected", [
    ("so the answer is \\boxed{42}.", "42"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("nested \\boxed{\\left(\\frac{a}{b^{2}}, \\{1,2\\}\\right)} end", "\\left(\\frac{a}{b^{2}}, \\{1,2\\}\\right)"),
    ("first \\boxed{1} then \\boxed{2} finally \\fbox{3}", "3"),
    ("\\fbox{7} then \\boxed{8}", "8"),
    ("\\boxed 5 apples", "5"),
    ("no box here, the answer is 12", None),
    ("cut off \\boxed{\\frac{1}{2", None),
    ("\\boxed{}", None),
    ("\\boxed{\\text{(B)}}", "(B)"),
    ("\\boxed{5\\text{ cm}}", "5 cm"),
    ("\\boxed{$x=3$}", "x=3"),
    ("\\boxedfoo{1} \\boxed{2}", "2"),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Therefore, the answer is 17.", "17"),
    ("The answer is: $\\frac{3}{4}$\nDone", "\\frac{3}{4}"),
    ("we get 3, then 4, so 5 apples", "5"),
    ("a boxed answer still wins: \\boxed{9}. The answer is 8", "9"),
    ("nothing at all", None),
])
def test_fallbacks_when_enabled(text, expected):
    assert extract_answer(text, fallbacks=True) == expected


def test_fallbacks_off_by_default():
    assert extract_answer("The answer is 17.") is None


def test_last_boxed_keeps_raw_content_and_strip_wrappers_unwraps():
    assert last_boxed("\\boxed{\\text{Monday}}") == "\\text{Monday}"
    assert strip_wrappers("\\textbf{\\mathrm{x}} + 1") == "x + 1"


@pytest.mark.parametrize("text, finished, expected", [
    ("To find 6 + 1, we can use the", False, None),          # cut mid-sentence: no answer, not "1"
    ("To find 6 + 1, we get \\boxed{7} and", False, "7"),     # a closed box is an answer even when cut
    ("6 + 1 = 7", True, "7"),
])
def test_fallbacks_ignore_completions_cut_at_the_token_limit(text, finished, expected):
    assert extract_answer(text, fallbacks=True, finished=finished) == expected
