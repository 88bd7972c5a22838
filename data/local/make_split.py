"""Make data/local/arith-{train,heldout}.jsonl: a seeded, disjoint split of easy arithmetic word problems.

Run from the repository root: `python data/local/make_split.py`. The output is deterministic (same
sources, same seed -> byte-identical files), so re-running it is a no-op.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

SEED = 20250413
N_HELDOUT = 300
N_TRAIN = 1500
ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "data" / "arith-eval"
OUT = ROOT / "data" / "local"

# An answer we keep: one plain number, optionally followed by a unit in parentheses ("9 (apples)").
_NUMBER = re.compile(r"\s*(-?[\d,]*\.?\d+)\s*(\([^()]*\))?\s*")


def format_number(value: float) -> str | None:
    """'14' for 14.0, '2.5' for 2.5; None for repeating decimals (3.33333) no grader can match."""
    if value == int(value):
        return str(int(value))
    text = f"{value:.10g}"
    return text if len(text.split(".")[1]) <= 2 else None


def parse_answer(raw) -> str | None:
    if isinstance(raw, (int, float)):
        return format_number(float(raw))
    m = _NUMBER.fullmatch(str(raw))
    return format_number(float(m.group(1).replace(",", ""))) if m else None


def read(name: str):
    with open(SRC / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def candidates():
    """(source id, question, raw answer) for every item of the easy sets, in file order."""
    for kind in ("singleop", "addsub", "multiarith"):
        for i, r in enumerate(read(f"mawps-{kind}.jsonl")):
            yield f"mawps-{kind}:{i}", r["input"], r["target"]
    for r in read("svamp-test.jsonl"):
        yield f"svamp:{r['ID']}", f"{r['Body'].strip()} {r['Question'].strip()}", r["Answer"]
    for r in read("asdiv-test.jsonl"):
        yield f"asdiv:{r['idx']}", f"{r['body'].strip()} {r['question'].strip()}", r["answer"]


def clean_question(text: str) -> str:
    # MAWPS is pre-tokenised ("Sara 's ... ?"); undo the spaces before punctuation.
    text = re.sub(r"\s+([.,?!;:'])", r"\1", text.strip())
    return re.sub(r"\s+", " ", text)


def dedupe_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def build() -> tuple[list[dict], list[dict]]:
    seen: set[str] = set()
    pool = []
    for source, question, raw in candidates():
        answer = parse_answer(raw)
        question = clean_question(question)
        key = dedupe_key(question)
        if answer is None or key in seen:  # non-numeric answers (times, names, ratios) and repeats
            continue
        seen.add(key)
        pool.append({"question": question, "answer": answer, "source": source})
    random.Random(SEED).shuffle(pool)
    return pool[N_HELDOUT:N_HELDOUT + N_TRAIN], pool[:N_HELDOUT]


def write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    train, heldout = build()
    write(OUT / "arith-train.jsonl", train)
    write(OUT / "arith-heldout.jsonl", heldout)
    print(f"train {len(train)}, heldout {len(heldout)}")
