"""`empo validate`: check EmpoRun manifests against the CRD schema and the models.

The CRD schema catches what the API server would refuse (types, enums, bounds, unknown fields);
the models add what a schema cannot say. Every error names its file, document and field path.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import schema_check
from .crd import openapi_schema
from .manifest_yaml import KubeYamlLoader, ManifestYamlError, load_yaml_documents, shorten  # noqa: F401 (re-exported)
from .models import API_VERSION, KIND, EmpoRun


FieldError = schema_check.SchemaError


def model_errors(exc: ValidationError) -> list[FieldError]:
    """Pydantic errors as field paths in the manifest's (camelCase) names."""
    errors = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and err["type"] not in ("model_type",) and not isinstance(err["input"], (dict, list)) \
                and repr(err["input"]) not in msg:
            msg = f"{msg} (got {shorten(repr(err['input']))})"
        errors.append(FieldError(schema_check.field_path(loc), msg))
    return errors


@functools.lru_cache(maxsize=1)
def _openapi_schema() -> dict[str, Any]:
    return openapi_schema()  # generating it takes longer than checking a manifest against it


def validate_manifest(doc: Any) -> list[FieldError]:
    """All errors of one EmpoRun manifest; [] when the API server and the operator would accept it."""
    if not isinstance(doc, dict):
        return [FieldError("", f"expected a mapping (an EmpoRun manifest), got {type(doc).__name__}")]
    wrong = [FieldError(key, f"expected {want}, got {shorten(repr(doc.get(key)))}")
             for key, want in (("apiVersion", API_VERSION), ("kind", KIND)) if doc.get(key) != want]
    if wrong:
        return wrong
    errors: list[FieldError] = []
    seen = set()
    try:
        EmpoRun.model_validate(doc)
    except ValidationError as exc:
        for e in model_errors(exc):
            errors.append(e)
            seen.add(e.path)
    for e in schema_check.check(doc, _openapi_schema()):
        # The model already explained this field (usually better); report schema-only findings.
        if not any(e.path == p or e.path.startswith(p + ".") or e.path.startswith(p + "[") for p in seen):
            errors.append(e)
    return errors


def load_documents(path: Path) -> list[Any]:
    """The documents of a manifest file (- for stdin); OSError or ManifestYamlError otherwise."""
    return load_yaml_documents(sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes())


def _name(doc: Any) -> str | None:
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return shorten(name, 63) if isinstance(name, str) else None


def validate_files(paths: list[Path], out=sys.stdout) -> int:
    """Print every error as FILE[#doc] path: message; return the number of errors."""
    count = 0
    for path in paths:
        try:
            docs = load_documents(path)
        except (OSError, ManifestYamlError) as exc:
            print(f"{path}: cannot read: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}", file=out)
            count += 1
            continue
        if not docs:
            print(f"{path}: no manifest in the file (it is empty or holds only null documents)", file=out)
            count += 1
        for i, doc in enumerate(docs):
            where = f"{path}" + (f"#{i}" if len(docs) > 1 else "")
            name = _name(doc)
            errors = validate_manifest(doc)
            for e in errors:
                print(f"{where} ({name}): {e}" if name else f"{where}: {e}", file=out)
            if not errors:
                print(f"{where}: ok ({name})", file=out)
            count += len(errors)
    return count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="EmpoRun manifests (YAML, several documents allowed; - for stdin)")


def run(args: argparse.Namespace) -> int:
    return 1 if validate_files(args.files) else 0
