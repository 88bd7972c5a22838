"""`empo validate`: check EmpoRun manifests against the CRD schema and the models.

The CRD schema catches what the API server would refuse (types, enums, bounds, unknown fields);
the models add what a schema cannot say. Every error names its file, document and field path.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from . import schema_check
from .crd import openapi_schema
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
            msg = f"{msg} (got {err['input']!r})"
        errors.append(FieldError(schema_check.field_path(loc), msg))
    return errors


def validate_manifest(doc: Any) -> list[FieldError]:
    """All errors of one EmpoRun manifest; [] when the API server and the operator would accept it."""
    if not isinstance(doc, dict):
        return [FieldError("", f"expected a mapping (an EmpoRun manifest), got {type(doc).__name__}")]
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        return [FieldError("kind", f"expected apiVersion {API_VERSION} and kind {KIND}, "
                                   f"got {doc.get('apiVersion')!r} {doc.get('kind')!r}")]
    errors: list[FieldError] = []
    seen = set()
    try:
        EmpoRun.model_validate(doc)
    except ValidationError as exc:
        for e in model_errors(exc):
            errors.append(e)
            seen.add(e.path)
    for e in schema_check.check(doc, openapi_schema()):
        # The model already explained this field (usually better); report schema-only findings.
        if not any(e.path == p or e.path.startswith(p + ".") or e.path.startswith(p + "[") for p in seen):
            errors.append(e)
    return errors


class KubeYamlLoader(yaml.SafeLoader):
    """YAML as kubectl reads it: `1e-06` (how kustomize and Go write small floats) is a number.
    PyYAML follows YAML 1.1, where a float needs a dot, and would hand the models a string."""


KubeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_yaml_documents(text: str) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=KubeYamlLoader) if d is not None]


def load_documents(path: Path) -> list[Any]:
    return load_yaml_documents(sys.stdin.read() if str(path) == "-" else path.read_text())


def validate_files(paths: list[Path], out=sys.stdout) -> int:
    """Print every error as FILE[#doc] path: message; return the number of errors."""
    count = 0
    for path in paths:
        try:
            docs = load_documents(path)
        except (OSError, yaml.YAMLError) as exc:
            print(f"{path}: cannot read: {exc}", file=out)
            count += 1
            continue
        for i, doc in enumerate(docs):
            where = f"{path}" + (f"#{i}" if len(docs) > 1 else "")
            name = doc.get("metadata", {}).get("name") if isinstance(doc, dict) else None
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
