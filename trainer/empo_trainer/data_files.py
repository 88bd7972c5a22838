"""Rows of a data file from a local path, an s3:// object or a Hugging Face dataset (hf://org/name).

Shared by training prompts (data.py) and benchmarks (evaluation/benchmarks.py); callers wrap
SourceError in their own error type so the message names their spec field or benchmark. Models
are not data files: model_source.py resolves spec.model.source.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from empo_api.uri import Uri


class SourceError(ValueError):
    pass


def parse_rows(data: bytes, fmt: str) -> list[dict[str, Any]]:
    """Rows of a jsonl, json (a list) or parquet file's bytes."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pylist()
    text = data.decode("utf-8")
    if fmt == "json" and text.lstrip().startswith("["):
        return json.loads(text)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SourceError(f"line {n} is not JSON: {exc.msg}") from None
    return rows


def format_of(uri: str) -> str | None:
    name = uri.lower()
    for ext, fmt in ((".parquet", "parquet"), (".jsonl", "jsonl"), (".json", "json")):
        if name.endswith(ext):
            return fmt
    return None


def read_hf_rows(uri: str, split: str) -> list[dict[str, Any]]:
    import datasets

    try:  # offline runs read only what is already in the local Hugging Face cache
        return list(datasets.load_dataset(Uri.parse(uri).key, split=split))
    except Exception as exc:  # offline, missing, private: one clear message
        raise SourceError(f"cannot load the Hugging Face dataset: {exc}") from exc


def read_bytes(uri: str, local_path: Path | None = None) -> bytes:
    """The bytes of an s3:// object (endpoint from AWS_ENDPOINT_URL) or of a local file."""
    location = Uri.parse(uri)
    if location.is_s3:
        from empo_api.paths import source_problem

        problem = source_problem(uri)  # the models refuse it; this holds for URIs that never went through them
        if problem:
            raise SourceError(problem)

        from .storage.outage import s3_client

        bucket, key = location.bucket, location.key
        client = s3_client(os.environ.get("AWS_ENDPOINT_URL") or None)
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise SourceError(f"cannot read: {exc}") from exc
    path = local_path or Path(uri).expanduser()
    if not path.is_file():
        raise SourceError("no such file")
    return path.read_bytes()
