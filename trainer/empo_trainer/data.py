"""Training prompts from the spec's dataset: a local file, an s3:// object or a Hugging Face dataset.

Rows become {"prompt": chat messages, "question": str, "answer": str | None}; the answer column
exists only for monitoring (and the supervised `gold` baseline), never for the EMPO reward.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

from empo_api.models import DatasetSpec, PromptSpec

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
    if spec.format:
        return spec.format
    name = spec.uri.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    raise DatasetError(f"spec.dataset.format: cannot infer the format of {spec.uri!r}; set jsonl or parquet")


def _parse(data: bytes, fmt: str, uri: str) -> list[dict[str, Any]]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pylist()
    rows = []
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"spec.dataset.uri {uri!r}: line {n} is not JSON: {exc.msg}") from None
    return rows


def _read_rows(spec: DatasetSpec) -> list[dict[str, Any]]:
    uri = spec.uri
    if uri.startswith("hf://"):
        import datasets

        try:
            return list(datasets.load_dataset(uri[len("hf://"):], split=spec.split))
        except Exception as exc:  # offline, missing, private: one clear message
            raise DatasetError(f"spec.dataset.uri {uri!r}: cannot load the Hugging Face dataset: {exc}") from exc
    if uri.startswith("s3://"):
        import os

        import boto3

        bucket, _, key = uri[len("s3://"):].partition("/")
        client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
        try:
            data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise DatasetError(f"spec.dataset.uri {uri!r}: cannot read: {exc}") from exc
        return _parse(data, _format(spec), uri)
    path = Path(uri).expanduser()
    if not path.is_file():
        raise DatasetError(f"spec.dataset.uri {uri!r}: no such file")
    return _parse(path.read_bytes(), _format(spec), uri)


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
