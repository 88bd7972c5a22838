"""Final-answer extraction: the content of the last \\boxed{...} (or \\fbox{...}), found by brace matching.

Optional fallbacks ("The answer is X", then the last number) exist for free-form and small models;
they are off by default for math, as in the EMPO paper, so an unboxed answer counts as unanswered.
"""

from __future__ import annotations

import re

BOX_COMMANDS = ("\\boxed", "\\fbox")
# Wrappers whose content is the answer: \text{(B)} -> (B), \mathrm{cm} -> cm.
TEXT_WRAPPERS = ("\\text", "\\textbf", "\\textit", "\\textrm", "\\mathrm", "\\mathbf", "\\mbox", "\\operatorname",
                 "\\boxed", "\\fbox")

_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*(.+?)\s*(?:\.\s*$|\.\s+|\n|$)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def matching_brace(text: str, open_at: int) -> int | None:
    """Index of the '}' closing the '{' at open_at, or None when the text ends first.

    Escaped braces (\\{ \\}) are set delimiters, not groups, so they do not count.
    """
    depth = 0
    i = open_at
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _command_starts(text: str, command: str) -> list[int]:
    # \boxed must not match \boxedfoo: the next character may not be a letter.
    return [m.start() for m in re.finditer(re.escape(command) + r"(?![A-Za-z])", text)]


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{} / \\fbox{} in text; None when there is none or it is cut off."""
    starts = [(s, c) for c in BOX_COMMANDS for s in _command_starts(text, c)]
    if not starts:
        return None
    start, command = max(starts)
    i = start + len(command)
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        end = matching_brace(text, i)
        return None if end is None else text[i + 1:end]
    # "\boxed 5": the argument is the next token
    m = re.match(r"[^\s$]+", text[i:])
    return m.group(0) if m else None


def strip_wrappers(answer: str) -> str:
    """Replace \\text{X}-style wrappers by X (anywhere), strip $...$ and surrounding space."""
    out = answer
    for command in TEXT_WRAPPERS:
        while True:
            starts = _command_starts(out, command)
            if not starts:
                break
            s = starts[-1]  # innermost-last first keeps indices valid after each replacement
            i = s + len(command)
            while i < len(out) and out[i] == " ":
                i += 1
            if i >= len(out) or out[i] != "{":
                out = out[:s] + out[i:]
                continue
            end = matching_brace(out, i)
            if end is None:
                break
            out = out[:s] + out[i + 1:end] + out[end + 1:]
    out = out.strip()
    while len(out) >= 2 and out[0] == "$" and out[-1] == "$":
        out = out[1:-1].strip()
    return out


def extract_answer(text: str, fallbacks: bool = False, finished: bool = True) -> str | None:
    """The final answer of a completion, or None when it gives none.

    fallbacks: also accept "The answer is X" and, failing that, the last number in the text.
    finished: False for a completion cut off at the token limit. It has no final sentence, so the
    fallbacks do not apply: its last number is whatever it was saying when cut (often a number
    restated from the question, which a policy learns to agree on: a reward hack seen on CPU runs).
    """
    boxed = last_boxed(text)
    if boxed is not None:
        answer = strip_wrappers(boxed)
        return answer or None
    if not fallbacks or not finished:
        return None
    matches = _ANSWER_IS.findall(text)
    if matches:
        answer = strip_wrappers(matches[-1])
        if answer:
            return answer
    numbers = _NUMBER.findall(text)
    return numbers[-1].rstrip(".") if numbers else None
