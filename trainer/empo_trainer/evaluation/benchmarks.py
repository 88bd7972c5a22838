"""Benchmarks as data: where each file is, which fields hold the question and the gold answer, how
the gold is written, and what to strip from the question before the run's prompt template is applied.

`load_benchmark("math500", limit=8)` -> [BenchmarkItem]. A benchmark string may also name its data:
`"mmlu_pro=s3://bucket/mmlu-pro.jsonl"`, `"gpqa=/data/gpqa.jsonl"`, `"math500=hf://org/name"`.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from empo_api.uri import Uri

from .. import data_files
from ..data import get_field

# Installed packages find the data next to the source tree; images may point elsewhere.
REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_ROOT_ENV = "EMPO_DATA_DIR"

# verl-format math questions end with the EMPO instruction (two spellings occur: AIME's has
# "Let's think step by step, and put"). Stripped so the run's own template is the only instruction.
_MATH_INSTRUCTION = r"\s*Let'?s think step by step,? and (?:output|put) the final answer within \\boxed\{\}\.?\s*$"
LETTERS = "ABCDEFGHIJ"


class BenchmarkError(ValueError):
    """A benchmark cannot be loaded; the message names it, the URI and what is allowed."""


@dataclass(frozen=True)
class BenchmarkDef:
    name: str
    uri: str | None  # comma-separated files; each a repo-relative path, absolute path, s3://bucket/key or hf://org/name; None: supplied by the user
    question: tuple[str, ...]  # dotted field paths, joined with a space (SVAMP: Body + Question)
    answer: str  # dotted field path of the gold answer (a string, a number or a list of them)
    kind: str = "math"  # math: symbolic equivalence; number: numeric gold; choice: option letter
    gold_format: str = "plain"  # plain | after_hashes (GSM8K '#### 18') | leading_number ('9 (apples)')
    strip: str | None = None  # regex removed from the question (an instruction already in the data)
    options: tuple[str, ...] = ()  # choice: one field holding a list, or several fields, one per option
    shuffle_options: bool = False  # choice: the first option is the correct one (GPQA); shuffle per item
    split: str = "test"  # for hf:// sources
    math_avg: bool = False  # one of the five benchmarks in the paper's "Avg"
    source: str = ""  # where the data comes from (shown in reports)


def _math(name: str, file: str, source: str) -> BenchmarkDef:
    return BenchmarkDef(name, f"data/math-eval/{file}", ("prompt.0.content",), "reward_model.ground_truth",
                        strip=_MATH_INSTRUCTION, math_avg=True, source=source)


BENCHMARKS: dict[str, BenchmarkDef] = {d.name: d for d in [
    _math("math500", "math500.jsonl", "MATH500 (Lightman et al.)"),
    _math("minerva_math", "minerva_math.jsonl", "Minerva Math (MIT OCW)"),
    _math("olympiadbench", "olympiadbench.jsonl", "OlympiadBench"),
    _math("aime24", "aime24_0726.jsonl", "AIME 2024"),
    _math("amc23", "amc23_1010.jsonl", "AMC 2023"),
    BenchmarkDef("gsm8k", "data/arith-eval/gsm8k-test.jsonl", ("question",), "answer", kind="number",
                 gold_format="after_hashes", source="GSM8K test"),
    BenchmarkDef("svamp", "data/arith-eval/svamp-test.jsonl", ("Body", "Question"), "Answer", kind="number",
                 source="SVAMP"),
    BenchmarkDef("asdiv", "data/arith-eval/asdiv-test.jsonl", ("body", "question"), "answer", kind="number",
                 gold_format="leading_number", source="ASDiv"),
    BenchmarkDef("mawps", ",".join(f"data/arith-eval/mawps-{s}.jsonl" for s in ("singleeq", "singleop", "addsub", "multiarith")),
                 ("input",), "target", kind="number", source="MAWPS (singleeq, singleop, addsub, multiarith)"),
    BenchmarkDef("arith-heldout", "data/local/arith-heldout.jsonl", ("question",), "answer", kind="number",
                 source="data/local held-out split of MAWPS, SVAMP, ASDiv"),
    BenchmarkDef("digits-heldout", "data/local/digits-heldout.jsonl", ("question",), "answer", kind="number",
                 source="data/local held-out one-digit a + b and a x b (benchmarks/experiment/tasks.py)"),
    # Supplied at a path: `mmlu_pro=PATH`. TIGER-Lab/MMLU-Pro rows: question, options (list), answer (letter).
    BenchmarkDef("mmlu_pro", None, ("question",), "answer", kind="choice", options=("options",), source="MMLU-Pro"),
    # Supplied at a path: `gpqa=PATH`. Idavidrein/gpqa rows: Question, Correct Answer, Incorrect Answer 1-3.
    BenchmarkDef("gpqa", None, ("Question",), "Correct Answer", kind="choice", shuffle_options=True,
                 options=("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"),
                 split="train", source="GPQA"),
]}
# Other names people use for the same data.
ALIASES = {"minerva": "minerva_math", "olympiad": "olympiadbench", "aime": "aime24", "amc": "amc23",
           "mmlu-pro": "mmlu_pro", "gpqa_diamond": "gpqa", "arith_heldout": "arith-heldout"}


@dataclass(frozen=True)
class BenchmarkItem:
    benchmark: str
    index: int  # row number in the source file
    question: str  # bare question (options included for multiple choice), before the prompt template
    gold: tuple[str, ...]  # accepted answers
    kind: str


@dataclass
class Benchmark:
    definition: BenchmarkDef
    uri: str
    items: list[BenchmarkItem] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.definition.name


def parse_benchmark_arg(arg: str) -> tuple[BenchmarkDef, str]:
    """'math500' or 'gpqa=/path/file.jsonl' -> (definition, uri)."""
    name, _, uri = arg.partition("=")
    name = ALIASES.get(name.strip().lower(), name.strip().lower())
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    definition = BENCHMARKS[name]
    uri = uri.strip() or definition.uri
    if not uri:
        raise BenchmarkError(f"benchmark {name!r} ships no data here; give its file as '{name}=PATH_OR_S3_URI'")
    return definition, uri


# ------------------------------------------------------------------------------------------------
# reading (thin I/O)
# ------------------------------------------------------------------------------------------------


def _local_path(uri: str) -> Path:
    path = Path(uri).expanduser()
    if path.is_absolute():
        return path
    root = os.environ.get(DATA_ROOT_ENV)
    for base in ([Path(root)] if root else []) + [Path.cwd(), REPO_ROOT]:
        if (base / path).is_file():
            return base / path
    return REPO_ROOT / path


def parse_rows(data: bytes, uri: str) -> list[dict[str, Any]]:
    """Rows of a .jsonl, .json (a list) or .parquet file."""
    try:
        return data_files.parse_rows(data, data_files.format_of(uri) or "jsonl")
    except data_files.SourceError as exc:
        raise BenchmarkError(f"{uri}: {exc}") from None


def read_rows(uri: str, split: str = "test") -> list[dict[str, Any]]:
    """Rows of one source, or of several joined with commas (read in order, concatenated)."""
    if "," in uri:
        return [row for part in uri.split(",") for row in read_rows(part.strip(), split)]
    scheme = Uri.parse(uri).scheme
    local = None if scheme in ("s3", "hf") else _local_path(uri)
    try:
        if scheme == "hf":
            return data_files.read_hf_rows(uri, split)
        data = data_files.read_bytes(uri, local)
    except data_files.SourceError as exc:
        where = f" (looked in ${DATA_ROOT_ENV}, the current folder and {REPO_ROOT})" if local else ""
        raise BenchmarkError(f"{uri}: {exc}{where}") from exc
    return parse_rows(data, uri)


# ------------------------------------------------------------------------------------------------
# rows -> items (pure)
# ------------------------------------------------------------------------------------------------


def format_gold(value: Any, gold_format: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if gold_format == "after_hashes":
        text = text.rsplit("####", 1)[-1].strip()
    elif gold_format == "leading_number":  # '9 (apples)' -> '9'; non-numeric answers stay as written
        text = re.sub(r"\s*\([^()]*\)\s*$", "", text)
    text = text.replace(",", "") if re.fullmatch(r"-?[\d,]+(\.\d+)?", text) else text
    if re.fullmatch(r"-?\d+\.0+", text):
        text = text.split(".")[0]
    return text or None


def _options(row: dict[str, Any], d: BenchmarkDef, index: int) -> tuple[list[str], str | None]:
    """The options and the correct letter (None when the gold field is already the letter)."""
    if len(d.options) == 1:
        values = get_field(row, d.options[0]) or []
    else:
        values = [get_field(row, f) for f in d.options]
    options = [str(v).strip() for v in values if v is not None and str(v).strip()]
    if not d.shuffle_options:
        return options, None
    order = list(range(len(options)))
    # Same order on every run and machine: seeded by the question itself, not by Python's hash().
    seed = int(hashlib.sha256(f"{d.name}:{index}".encode()).hexdigest()[:8], 16)
    random.Random(seed).shuffle(order)
    return [options[i] for i in order], LETTERS[order.index(0)]


def to_items(rows: list[dict[str, Any]], d: BenchmarkDef, limit: int | None = None) -> list[BenchmarkItem]:
    items = []
    for index, row in enumerate(rows):
        parts = [get_field(row, p) for p in d.question]
        question = " ".join(str(p).strip() for p in parts if p is not None and str(p).strip())
        if d.strip:
            question = re.sub(d.strip, "", question)
        if d.kind == "choice":
            options, letter = _options(row, d, index)
            question += "\n\n" + "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
            question += "\n\nAnswer with the letter of the correct option."
            gold_values = [letter] if letter else [get_field(row, d.answer)]
        else:
            raw = get_field(row, d.answer)
            gold_values = raw if isinstance(raw, list) else [raw]
        gold = tuple(g for g in (format_gold(v, d.gold_format) for v in gold_values) if g)
        if not question or not gold:
            continue
        items.append(BenchmarkItem(d.name, index, question, gold, d.kind))
        if limit and len(items) >= limit:
            break
    if rows and not items:
        fields = ", ".join(sorted(rows[0])) if isinstance(rows[0], dict) else "?"
        raise BenchmarkError(f"benchmark {d.name!r}: fields {d.question} / {d.answer!r} match no row; "
                             f"fields of the first row: {fields}")
    return items


def load_benchmark(arg: str, limit: int | None = None) -> Benchmark:
    d, uri = parse_benchmark_arg(arg)
    return Benchmark(d, uri, to_items(read_rows(uri, d.split), d, limit))
