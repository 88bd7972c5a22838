"""Where things live in a run folder, and the pure rules about them (no I/O except hashing files).

    <uri>/<namespace>/<run>/
        checkpoints/step-000120/<files...>
        checkpoints/step-000120/empo-manifest.json   sizes + sha256 of every file, written after them
        checkpoints/LATEST                           names the newest verified checkpoint, written last
        metrics.jsonl
        eval/...
        report.html
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from empo_api.paths import key_problem, source_problem
from empo_api.redaction import quote
from empo_api.uri import Uri

from .errors import InvalidStorageURIError

CHECKPOINTS = "checkpoints"
LATEST_KEY = f"{CHECKPOINTS}/LATEST"
MANIFEST_NAME = "empo-manifest.json"
METRICS_KEY = "metrics.jsonl"
ATTEMPTS = "attempts"  # attempts/attempt-000007.json: one per attempt; the highest is the run's only writer
_ATTEMPT_KEY = re.compile(r"^attempts/attempt-(\d{6,})\.json$")
REPORT_KEY = "report.html"
MANIFEST_FORMAT = "empo-checkpoint/1"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")
_HASH_BLOCK = 8 * 1024 * 1024


def parse_metrics(text: str) -> tuple[list[dict[str, Any]], list[int]]:
    """(records, numbers of the lines that are not one) of a metrics.jsonl body: a line that is not
    a JSON object with an integer step (the torn end of an append whose writer was killed) is not a
    record; blank lines are neither."""
    records: list[dict[str, Any]] = []
    torn: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        else:
            torn.append(number)
    return records, torn


def step_dir(step: int) -> str:
    """'step-000120': zero-padded so names sort in step order."""
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    return f"step-{step:06d}"


def parse_step_dir(name: str) -> int | None:
    m = _STEP_DIR.match(name)
    return int(m.group(1)) if m else None


def checkpoint_prefix(step: int) -> str:
    return f"{CHECKPOINTS}/{step_dir(step)}/"


def manifest_key(step: int) -> str:
    return checkpoint_prefix(step) + MANIFEST_NAME


def clean_key(key: str) -> str:
    """A relative key inside the run folder: refused when absolute, with a '..', '.' or empty segment,
    a backslash or a control character (empo_api.paths, the one place these rules live)."""
    problem = key_problem(key) if isinstance(key, str) else "is not a string"
    if problem:
        raise InvalidStorageURIError(f"key {quote(key, 200)} {problem}; keys stay inside the run folder", str(key))
    return key


@dataclass(frozen=True)
class StorageLocation:
    """storage.uri split into scheme and parts: s3 (bucket + key prefix) or a local folder."""

    scheme: str  # "s3" or "file"
    bucket: str | None
    prefix: str  # s3: key prefix without leading/trailing '/'; file: the folder path

    @classmethod
    def parse(cls, uri: str) -> "StorageLocation":
        problem = source_problem(uri)
        if problem:  # the models refuse it too; this holds for URIs that never went through them
            raise InvalidStorageURIError(f"{quote(uri, 200)}: {problem}", uri)
        location = Uri.parse(uri)  # the same split and bucket rule as the models'
        if location.is_s3:
            if location.bucket_problem():
                raise InvalidStorageURIError(f"{quote(uri, 200)}: {quote(location.bucket, 70)} is not a valid bucket "
                                             "name; expected s3://bucket/prefix", uri)
            return cls("s3", location.bucket, location.key.strip("/"))
        if location.scheme in ("hf", "other"):
            raise InvalidStorageURIError(f"{quote(uri, 200)}: allowed are s3://bucket/prefix or a local path", uri)
        return cls("file", None, uri)

    def run_root(self, namespace: str, name: str) -> "StorageLocation":
        for label, value in (("namespace", namespace), ("name", name)):
            if not value or "/" in value or value in (".", ".."):
                raise InvalidStorageURIError(f"run {label} '{value}' must be a single non-empty path segment", value)
        if self.scheme == "s3":
            prefix = "/".join(p for p in (self.prefix, namespace, name) if p)
            return StorageLocation("s3", self.bucket, prefix)
        return StorageLocation("file", None, str(Path(self.prefix) / namespace / name))

    @property
    def uri(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return str(Path(self.prefix).resolve())


# --------------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def local_files(folder: Path) -> list[str]:
    """Every regular file under `folder`, as sorted relative posix paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def build_manifest(folder: Path, step: int, score: float | None, created_at: str) -> dict[str, Any]:
    files = local_files(folder)
    if not files:
        raise ValueError(f"checkpoint folder {folder} holds no files")
    if MANIFEST_NAME in files:
        raise ValueError(f"{folder}/{MANIFEST_NAME}: the name is reserved for the checkpoint manifest")
    return {
        "format": MANIFEST_FORMAT,
        "step": step,
        "score": score,
        "createdAt": created_at,
        "files": [{"path": rel, "size": (folder / rel).stat().st_size, "sha256": sha256_file(folder / rel)} for rel in files],
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


def parse_manifest(data: bytes, uri: str) -> dict[str, Any]:
    """The manifest, or ValueError saying what is wrong with it."""
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise ValueError(f"{uri}: manifest is not JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{uri}: not an {MANIFEST_FORMAT} manifest")
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise ValueError(f"{uri}: manifest lists no files")
    for entry in files:
        if not (isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("size"), int)
                and isinstance(entry.get("sha256"), str)):
            raise ValueError(f"{uri}: malformed manifest entry {entry!r}")
        clean_key(entry["path"])
    return manifest


def size_mismatches(manifest: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    """Files of the manifest missing from `sizes` (relative path -> bytes) or of another size."""
    problems = []
    for entry in manifest["files"]:
        actual = sizes.get(entry["path"])
        if actual is None:
            problems.append(f"{entry['path']} is missing")
        elif actual != entry["size"]:
            problems.append(f"{entry['path']} has {actual} bytes, manifest says {entry['size']}")
    return problems


def latest_bytes(step: int, manifest_sha256: str, attempt: int | None = None) -> bytes:
    doc: dict[str, Any] = {"checkpoint": step_dir(step), "step": step, "manifestSha256": manifest_sha256}
    if attempt is not None:
        doc["attempt"] = attempt  # the fencing token of the writer that committed it
    return (json.dumps(doc) + "\n").encode()


def attempt_key(attempt: int) -> str:
    return f"{ATTEMPTS}/attempt-{attempt:06d}.json"


def newest_attempt(keys: Iterable[str]) -> int:
    """The highest attempt number among attempts/ keys; 0 when none was ever claimed."""
    numbers = [int(m.group(1)) for k in keys if (m := _ATTEMPT_KEY.match(k))]
    return max(numbers, default=0)


def parse_latest(data: bytes, uri: str) -> tuple[int, str]:
    """(step, manifest sha256) from a LATEST file."""
    try:
        doc = json.loads(data)
        step, digest = int(doc["step"]), str(doc["manifestSha256"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{uri}: LATEST is not a valid pointer (expected JSON with step and manifestSha256)") from None
    return step, digest


# --------------------------------------------------------------------------------------------
# retention
# --------------------------------------------------------------------------------------------


def steps_to_delete(
    committed: Iterable[int],
    partial: Iterable[int],
    latest: int,
    keep_last: int,
    scores: dict[int, float] | None = None,
) -> list[int]:
    """Checkpoints retention removes once `latest` is committed.

    Keeps the `keep_last` newest committed checkpoints up to `latest` (always `latest` itself) and,
    when `scores` is given, the best-scoring one (highest score; the older step on ties). Removes
    older committed ones and partial uploads older than `latest`. Anything newer than `latest` is
    left alone: it may be a commit in progress.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    done = sorted({s for s in committed if s <= latest} | {latest}, reverse=True)
    keep = set(done[:keep_last])
    if scores:
        eligible = {s: v for s, v in scores.items() if s in done and v is not None}
        if eligible:
            keep.add(max(eligible, key=lambda s: (eligible[s], -s)))
    doomed = {s for s in done if s not in keep} | {s for s in partial if s < latest and s not in keep}
    return sorted(doomed)
