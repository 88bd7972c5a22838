"""Single-step arithmetic questions, generated deterministically, split by operand pair.

SmolLM2-135M-Instruct gets few two-digit word problems right, but on one-digit sums and products
its samples agree on the right answer more often than any one sample is right (maj@k > avg@k):
the latent ability that EMPO's reward turns into pass@1. Train and held-out splits share no
(operation, a, b) triple, so a held-out gain is not memorisation of training answers.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# (template, operation); {a} and {b} are the operands.
TEMPLATES = (
    ("What is {a} + {b}?", "add"),
    ("What is {a} times {b}?", "mul"),
)


def all_items() -> list[dict]:
    """Every question the task has: a + b for a, b in 1..9 and a x b for a, b in 2..9 (145 items)."""
    items = []
    for template, op in TEMPLATES:
        low = 1 if op == "add" else 2
        for a in range(low, 10):
            for b in range(low, 10):
                answer = a + b if op == "add" else a * b
                items.append({"question": template.format(a=a, b=b), "answer": str(answer), "source": f"{op}:{a}:{b}"})
    return items


def split(seed: int = 20250413, heldout: int = 48) -> tuple[list[dict], list[dict]]:
    """(train, heldout): a seeded shuffle of all_items(), the first `heldout` held out."""
    items = all_items()
    random.Random(seed).shuffle(items)
    return items[heldout:], items[:heldout]


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return path
