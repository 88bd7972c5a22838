"""Training prompts from the spec's dataset: a local file, an s3:// object or a Hugging Face dataset.

Rows become {"prompt": chat messages, "question": str, "answer": str | None}; the answer column
exists only for monitoring (and the supervised `gold` baseline), never for the EMPO reward.
"""

from __future__ import annotations

import random
from typing import Any

from empo_api.models import DatasetSpec, PromptSpec
from empo_api.uri import Uri

from . import data_files
from .sampling.chat import build_messages


class DatasetError(ValueError):
    """The dataset cannot be read as the spec describes; the message names the spec field."""


def get_field(row: dict[str, Any], path: str) -> Any:
    """Follow a dotted path through dicts and lists (prompt.0.content)."""
    value: Any = row
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value


def _format(spec: DatasetSpec) -> str:
    fmt = spec.format or data_files.format_of(spec.uri)
    if fmt is None:
        raise DatasetError(f"spec.dataset.format: cannot infer the format of {spec.uri!r}; set jsonl or parquet")
    return fmt


def _read_rows(spec: DatasetSpec) -> list[dict[str, Any]]:
    try:
        if Uri.parse(spec.uri).scheme == "hf":
            return data_files.read_hf_rows(spec.uri, spec.split)
        return data_files.parse_rows(data_files.read_bytes(spec.uri), _format(spec))
    except data_files.SourceError as exc:
        raise DatasetError(f"spec.dataset.uri {spec.uri!r}: {exc}") from exc


def to_examples(rows: list[dict[str, Any]], spec: DatasetSpec, prompt: PromptSpec) -> list[dict[str, Any]]:
    """Pure: raw rows -> training examples in a deterministic order (shuffle seed, then limit)."""
    examples = []
    for row in rows:
        question = get_field(row, spec.question_field)
        if question is None or not str(question).strip():
            continue
        answer = get_field(row, spec.answer_field) if spec.answer_field else None
        if isinstance(answer, list):
            answer = answer[0] if answer else None
        examples.append({
            "prompt": build_messages(str(question), prompt),
            "question": str(question),
            "answer": None if answer is None else _answer_text(answer),
        })
    if rows and not examples:
        fields = ", ".join(sorted(rows[0])) if isinstance(rows[0], dict) else "?"
        raise DatasetError(
            f"spec.dataset.questionField {spec.question_field!r} matches no row; fields of the first row: {fields}"
        )
    random.Random(spec.shuffle_seed).shuffle(examples)
    return examples[: spec.limit] if spec.limit else examples


def _answer_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def load_examples(spec: DatasetSpec, prompt: PromptSpec) -> list[dict[str, Any]]:
    return to_examples(_read_rows(spec), spec, prompt)
