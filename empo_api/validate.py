"""`empo validate`: check EmpoRun manifests against the CRD schema and the models.

The CRD schema catches what the API server would refuse (types, enums, bounds, unknown fields);
the models add what a schema cannot say. Every error names its file, document and field path.
Each file is judged on its own: one that cannot be read, or that trips a bug here, is reported
and the next file is still checked. No line repeats a secret: URL credentials are masked and the
literal values of secret-named env entries are scrubbed from every line printed (redaction.py).
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
from . import redaction
from .manifest_yaml import (  # noqa: F401 (KubeYamlLoader, load_yaml_documents and shorten are re-exported)
    KubeYamlLoader, ManifestYamlError, load_yaml_documents, printable, read_limited, shorten)
from .models import API_VERSION, KIND, EmpoRun


FieldError = schema_check.SchemaError


def model_errors(exc: ValidationError) -> list[FieldError]:
    """Pydantic errors as field paths in the manifest's (camelCase) names."""
    errors = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        # Only the message and a masked, shortened input: str(ValidationError) would add input_value=
        # with the whole value, credentials included.
        msg = redaction.mask_credentials(err["msg"].removeprefix("Value error, "))
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and err["type"] not in ("model_type",) and not isinstance(err["input"], (dict, list)) \
                and _may_quote(loc) and redaction.quote(err["input"]) not in msg:
            msg = f"{msg} (got {redaction.quote(err['input'])})"
        errors.append(FieldError(schema_check.field_path(loc), msg))
    return errors


def _may_quote(loc: list[Any]) -> bool:
    """Whether an error at `loc` may quote its input: not inside spec.ray.env, whose values are
    credentials as often as not (a secret-named entry's value is refused, never quoted)."""
    return [str(p) for p in loc[:3]] != ["spec", "ray", "env"]


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
    """The documents of a manifest file (- for stdin); OSError or ManifestYamlError otherwise. At most
    MAX_FILE_BYTES are read: a bigger file is refused without reading the rest."""
    if str(path) == "-":
        return load_yaml_documents(read_limited(sys.stdin.buffer))
    with open(path, "rb") as f:
        return load_yaml_documents(read_limited(f))


def _name(doc: Any) -> str | None:
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return shorten(name, 63) if isinstance(name, str) else None


def _emit(out, line: str, secrets: set[str]) -> None:
    """The one way a line reaches the user: secrets scrubbed, printable whatever the terminal."""
    line = printable(redaction.scrub(line, secrets))
    encoding = getattr(out, "encoding", None)
    if encoding:  # e.g. an ASCII-only stdout: escape rather than fail
        line = line.encode(encoding, "backslashreplace").decode(encoding)
    print(line, file=out)


def _check_file(path: Path, out) -> int:
    """Print the errors of one file; the number of errors."""
    try:
        docs = load_documents(path)
    except (OSError, ManifestYamlError) as exc:
        _emit(out, f"{path}: cannot read: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}", set())
        return 1
    if not docs:
        _emit(out, f"{path}: no manifest in the file (it is empty or holds only null documents)", set())
        return 1
    count = 0
    for i, doc in enumerate(docs):
        where = f"{path}" + (f"#{i}" if len(docs) > 1 else "")
        secrets = redaction.secrets_in(doc)
        name = _name(doc)
        try:
            errors = validate_manifest(doc)
        except Exception as exc:  # a bug here: this document is reported, the others still checked
            errors = [FieldError("", f"cannot check this document (internal error {type(exc).__name__}); "
                                     "please report it with the manifest")]
        for e in errors:
            _emit(out, f"{where} ({name}): {e}" if name else f"{where}: {e}", secrets)
        if not errors:
            _emit(out, f"{where}: ok ({name})", secrets)
        count += len(errors)
    return count


def validate_files(paths: list[Path], out=None) -> int:
    """Print every error as FILE[#doc] path: message (to `out`, default sys.stdout as it is at the
    call); return the number of errors. Each file is judged on its own: nothing one file holds stops
    the files after it from being checked."""
    out = sys.stdout if out is None else out
    count = 0
    for path in paths:
        try:
            count += _check_file(path, out)
        except Exception as exc:  # never a traceback, never the end of the run
            _emit(out, f"{printable(str(path))}: cannot check: internal error {type(exc).__name__}; "
                       "please report it with the file", set())
            count += 1
    return count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="EmpoRun manifests (YAML, several documents allowed; - for stdin)")


def run(args: argparse.Namespace) -> int:
    return 1 if validate_files(args.files) else 0
