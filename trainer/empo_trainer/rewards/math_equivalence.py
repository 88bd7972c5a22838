"""Math answer equivalence, high recall and fast.

Order of checks for two answers (docs/algorithm.md, "Math equivalence"):
1. canonical strings equal (spaces, \\left/\\right, \\dfrac, \\frac12, "x = 3", units, ...);
   plain numbers canonicalise to a reduced fraction, so 0.5, 1/2 and \\dfrac12 are one string;
   mixed numbers (1\\frac{4}{5}, 1 4/5) too, read before spaces go; a percent keeps its sign and
   equals both the bare number and its value (10% ~ 10 and 10% ~ 0.1, as math-verify grades);
2. both numeric (numbers or tuples/intervals of numbers): equal within relative tolerance 2e-3;
   this is decisive, no symbolic check follows;
3. math-verify symbolic equivalence in a worker process with a per-call timeout, cached.
Clustering hashes canonical forms first, so the symbolic check runs only between distinct forms.
"""

from __future__ import annotations

import ast
import functools
import math
import re
from collections.abc import Sequence
from fractions import Fraction

from .clustering import greedy_clusters_by_key
from .extraction import matching_brace, strip_wrappers
from .symbolic import SymbolicChecker, default_checker

RELATIVE_TOLERANCE = 2e-3

_UNITS = {
    "cm", "mm", "km", "m", "meter", "meters", "metre", "metres", "centimeter", "centimeters", "inch", "inches",
    "in", "ft", "foot", "feet", "yard", "yards", "mile", "miles", "mph", "kg", "g", "gram", "grams", "lb", "lbs",
    "pound", "pounds", "ounce", "ounces", "oz", "s", "sec", "second", "seconds", "min", "minute", "minutes",
    "hour", "hours", "day", "days", "week", "weeks", "month", "months", "year", "years", "degree", "degrees",
    "radian", "radians", "unit", "units", "dollar", "dollars", "cent", "cents", "percent", "l", "liter", "liters",
    "ml", "square", "sq", "cubic", "people", "students", "ways", "times", "points",
}
_SPACING = re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad(?![A-Za-z])|~|\\displaystyle(?![A-Za-z])")
_SIZING = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![A-Za-z])")
_DEGREE = re.compile(r"(?:\^\{?\\circ\}?|°|\\degree(?![A-Za-z]))$")
_PERCENT = re.compile(r"(?:\\%|%)$")
_ASSIGNMENT = re.compile(r"^(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?=([^=<>]+)$")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_FRACTION = re.compile(r"^([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}$")
_SLASH = re.compile(r"^([+-]?\d+)/([+-]?\d+)$")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_WORD = re.compile(r"^[A-Za-z]{2,}$")
# Words after a number, separated by whitespace. One way to split the tail into words: with the
# separator optional ((?:[A-Za-z]+\s*)+) a long answer that is not a unit ("4 because five potatoes
# ..., leaving ...") backtracked through every split of every word and hung grading for minutes.
_UNIT_WORD = r"[A-Za-z]+(?:\^\{?[23]\}?)?"
_UNIT_TAIL = re.compile(rf"^(.*?[\d}}])(\s*)({_UNIT_WORD}(?:\s+{_UNIT_WORD})*)\s*$")


def _trailing_unit(s: str) -> str:
    """'5 cm' -> '5', '12 square feet' -> '12', '5 \\text{ cm}^2' -> '5': known unit words after a number
    (safe to drop). Without a space, only after a digit, and a one-letter unit takes no exponent
    ('3s^2' is a monomial)."""
    m = _UNIT_TAIL.match(s)
    if not m:
        return s
    number, space, words = m.group(1), m.group(2), m.group(3).split()
    bases = [re.sub(r"\^.*", "", w) for w in words]
    if not all(b.lower() in _UNITS for b in bases):
        return s
    if not space and (number.endswith("}") or any(len(b) == 1 and "^" in w for b, w in zip(bases, words))):
        return s
    return number


_MIXED = (
    # 1\frac{4}{5}, 137 \frac{1}{2}, 2\frac13: a whole number next to a proper fraction is a mixed number
    re.compile(r"^([+-]?)(\d+)\s*\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))$"),
    re.compile(r"^([+-]?)(\d+)\s+(\d+)\s*/\s*(\d+)$"),  # 1 4/5 (the space is what makes it mixed)
)


def _mixed_number(s: str) -> Fraction | None:
    """The value of a mixed number (whole part and a proper fraction), or None.

    Must run before whitespace is removed: '1 4/5' would become 14/5, and '1\\frac{4}{5}' reads
    as the product 1 * 4/5 to anything that parses LaTeX."""
    for pattern in _MIXED:
        m = pattern.match(s)
        if m:
            sign, whole, *rest = m.groups()
            num, den = (int(x) for x in rest if x is not None)
            if 0 < num < den:
                value = int(whole) + Fraction(num, den)
                return -value if sign == "-" else value
    return None


def _split_top_level(s: str) -> list[str]:
    """Split on commas outside (), [], {}."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _as_fraction(s: str) -> Fraction | None:
    """Exact value of a plain number, a/b or \\frac{a}{b}; None for anything else."""
    if _NUMBER.match(s):
        return Fraction(s)
    m = _FRACTION.match(s) or _SLASH.match(s)
    if m:
        groups = m.groups()
        sign = -1 if len(groups) == 3 and groups[0] == "-" else 1
        num, den = int(groups[-2]), int(groups[-1])
        return None if den == 0 else sign * Fraction(num, den)
    return None


def _fraction_text(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


@functools.lru_cache(maxsize=65536)
def canonicalize(answer: str) -> str:
    """A normal form in which equal strings mean equivalent answers (never the reverse)."""
    s = strip_wrappers(answer)
    s = _SPACING.sub(" ", s)
    s = _SIZING.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("∞", "\\infty").replace("\\$", "")
    s = s.strip().rstrip(".").strip()
    s = re.sub(r"\s*percent$", "%", s)
    s = _trailing_unit(s)
    mixed = _mixed_number(s)
    if mixed is not None:
        return _fraction_text(mixed)
    s = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])", "\\1\x00", s)  # "\pi i" must not become "\pii"
    s = re.sub(r"\s+", "", s).replace("\x00", " ")
    s = _DEGREE.sub("", s)
    percent = bool(_PERCENT.search(s))
    s = _PERCENT.sub("", s)
    # \frac12 -> \frac{1}{2}, \frac1{x} -> \frac{1}{x}, \frac{x}2 -> \frac{x}{2}, \sqrt2 -> \sqrt{2}
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)(?=\{)", r"\\frac{\1}", s)
    s = re.sub(r"\\frac(\{[^{}]*\})(\d)", r"\\frac\1{\2}", s)
    s = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", s)
    s = re.sub(r"([\^_])\{(\w)\}", r"\1\2", s)  # x^{2} -> x^2
    s = s.replace("{,}", "")
    m = _ASSIGNMENT.match(s)  # "x=3" -> "3"
    if m:
        s = m.group(1)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    m = re.match(r"^\(([A-Ea-e])\)$", s)  # multiple choice "(B)" -> "B"
    if m:
        s = m.group(1).upper()
    if s.startswith("+"):
        s = s[1:]
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        inner = _split_top_level(s[1:-1])
        if len(inner) > 1:  # a tuple or interval: canonicalise each element
            return s[0] + ",".join(canonicalize(p) for p in inner) + s[-1]
    value = _as_fraction(s)
    s = _fraction_text(value) if value is not None else s
    # "10%" keeps its sign: it equals both 10 and 0.1 (canonical_equivalent), which differ from each other
    return s + "%" if percent and s else s


def numeric_value(canonical: str) -> Fraction | tuple | None:
    """A number, or (open, values, close) for a tuple/interval of numbers; None otherwise."""
    value = _as_fraction(canonical)
    if value is not None:
        return value
    if len(canonical) >= 2 and canonical[0] in "([" and canonical[-1] in ")]":
        parts = [_as_fraction(p) for p in _split_top_level(canonical[1:-1])]
        if len(parts) > 1 and all(p is not None for p in parts):
            return (canonical[0], tuple(parts), canonical[-1])
    return None


def numbers_close(x: Fraction, y: Fraction, rel_tol: float = RELATIVE_TOLERANCE) -> bool:
    """|x - y| <= rel_tol * max(|x|, |y|); two integers must be equal (1000 and 1001 differ)."""
    if x == y:
        return True
    if x.denominator == 1 and y.denominator == 1:
        return False
    return abs(x - y) <= Fraction(rel_tol) * max(abs(x), abs(y))


def numeric_equal(u: Fraction | tuple, v: Fraction | tuple) -> bool:
    if isinstance(u, Fraction) and isinstance(v, Fraction):
        return numbers_close(u, v)
    if isinstance(u, tuple) and isinstance(v, tuple):
        return (u[0], u[2], len(u[1])) == (v[0], v[2], len(v[1])) and all(
            numbers_close(a, b) for a, b in zip(u[1], v[1]))
    return False


def _latex_to_python(s: str) -> str | None:
    """A closed-form constant in LaTeX (numbers, \\frac, \\sqrt, \\pi, + - * / ^) as Python; None otherwise."""
    out, i = [], 0
    while i < len(s):
        for command, template in (("\\frac", "(({})/({}))"), ("\\sqrt", "sqrt({})")):
            if s.startswith(command + "{", i):
                args, j = [], i + len(command)
                for _ in range(template.count("{}")):
                    if j >= len(s) or s[j] != "{":
                        return None
                    end = matching_brace(s, j)
                    if end is None:
                        return None
                    inner = _latex_to_python(s[j + 1:end])
                    if inner is None:
                        return None
                    args.append(inner)
                    j = end + 1
                out.append(template.format(*args))
                i = j
                break
        else:
            if s.startswith("\\pi", i):
                out.append("pi")
                i += 3
            elif s.startswith(("\\cdot", "\\times"), i):
                out.append("*")
                i += 5 if s.startswith("\\cdot", i) else 6
            elif s[i] in "0123456789.+-*/()":
                out.append(s[i])
                i += 1
            elif s[i] == "^":
                out.append("**")
                i += 1
            elif s[i] in "{}":
                out.append("(" if s[i] == "{" else ")")
                i += 1
            else:
                return None
    # implicit multiplication: 2sqrt(5), 2pi, )( , 3(
    return re.sub(r"(?<=[\d.)i])\s*(?=sqrt|pi|\()", "*", "".join(out))


_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Call, ast.Add, ast.Sub, ast.Mult,
            ast.Div, ast.Pow, ast.USub, ast.UAdd, ast.Load)


def _evaluate(node) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return math.pi
    if isinstance(node, ast.Call):
        return math.sqrt(_evaluate(node.args[0]))
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    left, right = _evaluate(node.left), _evaluate(node.right)
    op = node.op
    # floats throughout: 10^{10^{10}} overflows at once instead of building a huge integer
    return left + right if isinstance(op, ast.Add) else left - right if isinstance(op, ast.Sub) else \
        left * right if isinstance(op, ast.Mult) else left / right if isinstance(op, ast.Div) else left ** right


@functools.lru_cache(maxsize=65536)
def constant_value(canonical: str) -> float | None:
    """The value of a closed-form real constant (2\\sqrt{5}, \\frac{\\pi}{6}), or None."""
    code = _latex_to_python(canonical)
    if not code:
        return None
    try:
        tree = ast.parse(code, mode="eval")
        if not all(isinstance(n, _ALLOWED) for n in ast.walk(tree)):
            return None
        if any(isinstance(n, ast.Name) and n.id not in ("pi", "sqrt") for n in ast.walk(tree)) or any(
                isinstance(n, ast.Call) and (getattr(n.func, "id", None) != "sqrt" or len(n.args) != 1)
                for n in ast.walk(tree)):
            return None
        value = _evaluate(tree)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError, RecursionError):
        return None
    return value if math.isfinite(value) else None


def answer_kind(canonical: str) -> str:
    """Coarse shape of an answer; answers of different shapes are never equivalent."""
    if "\\begin{" in canonical:
        return "matrix"
    if "\\cup" in canonical or "\\cap" in canonical:
        return "union"
    if canonical.startswith("\\{"):
        return "set"
    if "=" in canonical or "<" in canonical or ">" in canonical or "\\le" in canonical or "\\ge" in canonical:
        return "relation"
    if len(canonical) >= 2 and canonical[0] in "([" and canonical[-1] in ")]" and len(_split_top_level(canonical[1:-1])) > 1:
        return "tuple"
    if "," in canonical and len(_split_top_level(canonical)) > 1:
        return "list"
    if re.fullmatch(r"[0-9A-Za-z]+_\{?\d+\}?", canonical):
        return "base"  # 2516_8: a numeral in base 8
    if re.search(r"(?<![A-Za-z\\])i(?![A-Za-z])", canonical):
        return "complex"  # 6+9i never equals a real answer
    return "scalar"


def _has_free_variable(canonical: str) -> bool:
    """Letters outside LaTeX commands, other than the constants e and i."""
    return bool(re.search(r"[A-DF-HJ-Za-df-hj-z]", re.sub(r"\\[A-Za-z]+", "", canonical)))


class MathEquivalence:
    """Equivalence backend for math answers (see the module docstring for the order of checks)."""

    def __init__(self, timeout_s: float = 2.0, checker: SymbolicChecker | None = None) -> None:
        self.timeout_s = timeout_s
        self._checker = checker
        # lru_cache on canonical pairs, per instance (the timeout is part of the answer)
        self._symbolic = functools.lru_cache(maxsize=65536)(self._symbolic_uncached)
        self.symbolic_calls = 0

    @property
    def checker(self) -> SymbolicChecker:
        if self._checker is None:
            self._checker = default_checker()
        return self._checker

    def _symbolic_uncached(self, a: str, b: str) -> bool:
        self.symbolic_calls += 1
        return self.checker.equivalent(a, b, self.timeout_s)

    def canonical_equivalent(self, a: str, b: str) -> bool:
        """Equivalence of two canonical forms."""
        if a == b:
            return True
        if a.endswith("%") or b.endswith("%"):
            return self._percent_equivalent(a, b)
        u, v = numeric_value(a), numeric_value(b)
        if u is not None and v is not None:
            return numeric_equal(u, v)
        if answer_kind(a) != answer_kind(b):
            return False
        x, y = constant_value(a), constant_value(b)
        if x is not None and y is not None:  # closed-form constants: compare their values
            return x == y or abs(x - y) <= RELATIVE_TOLERANCE * max(abs(x), abs(y))
        if (x is not None and _has_free_variable(b)) or (y is not None and _has_free_variable(a)):
            return False  # a number never equals an expression in a variable
        # Plain words compare as strings: sympy would read "dog" and "god" as the same product d*o*g.
        if _WORD.match(a) or _WORD.match(b):
            return a.lower() == b.lower()
        return self._symbolic(*sorted((a, b)))

    def _percent_equivalent(self, a: str, b: str) -> bool:
        """As math-verify grades: 10% equals 10 (the number written without its sign) and 0.1 (its value)."""
        if a.endswith("%") and b.endswith("%"):
            return self.canonical_equivalent(a[:-1], b[:-1])
        percent, other = (a[:-1], b) if a.endswith("%") else (b[:-1], a)
        if self.canonical_equivalent(percent, other):
            return True
        value, other_value = _as_fraction(percent), numeric_value(other)
        return value is not None and isinstance(other_value, Fraction) and numbers_close(value / 100, other_value)

    def equivalent(self, a: str, b: str) -> bool:
        return self.canonical_equivalent(canonicalize(a), canonicalize(b))

    def cluster(self, answers: Sequence[str]) -> list[int]:
        """Cluster ids (0, 1, ... in order of first appearance), greedy against each cluster's first member."""
        return greedy_clusters_by_key(answers, canonicalize, self.canonical_equivalent)

    def cluster_groups(self, groups: Sequence[Sequence[str]], questions: Sequence[str] | None = None) -> list[list[int]]:
        return [self.cluster(g) for g in groups]
