"""A stand-in AnswerMatcher used only while the reward engine (empo_trainer.rewards) is absent.

Last \\boxed{} by brace matching; equal after light normalisation, or numerically within 2e-3
relative, or symbolically equal by math_verify. The reward engine's version replaces it.
"""

from __future__ import annotations

import re


def extract_boxed(text: str) -> str | None:
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j].strip()
    return None


def _normalise(s: str) -> str:
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("$", "")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    return re.sub(r"\s+", "", s).rstrip(".").lower()


def _number(s: str) -> float | None:
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


def equivalent(a: str, b: str) -> bool:
    na, nb = _normalise(a), _normalise(b)
    if na == nb:
        return True
    xa, xb = _number(na), _number(nb)
    if xa is not None and xb is not None:
        return abs(xa - xb) <= 2e-3 * max(abs(xa), abs(xb), 1e-12)
    try:
        import math_verify

        return bool(math_verify.verify(math_verify.parse(f"${b}$"), math_verify.parse(f"${a}$"), timeout_seconds=None))
    except Exception:
        return False
