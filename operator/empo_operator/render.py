"""`empo render RUN.yaml`: the manifests the operator would create for a run, as a YAML stream.

Same builders as the operator, same labels kopf.adopt copies from the run. The ownerReferences
kopf.adopt adds at creation are left out: they need the uid the API server gives the EmpoRun.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from empo_api.cli_errors import non_negative_int
from empo_api.validate import load_documents, validate_manifest

from .builders import UID_PLACEHOLDER
from .children import build_children
from .lifecycle import validate_run
from .settings import from_env


def render(manifest: dict[str, Any], attempt: int = 0) -> list[dict[str, Any]]:
    """The children of one EmpoRun manifest; ValueError naming the fields when it is invalid."""
    errors = validate_manifest(manifest)  # all of it, labels included: the API server would see them
    if errors:
        raise ValueError("invalid EmpoRun: " + "; ".join(str(e) for e in errors[:20]))
    settings = from_env()
    run, problem = validate_run(manifest, settings)
    if run is None:
        raise ValueError(problem.message if problem else "invalid EmpoRun")
    children = build_children(run, settings, attempt)
    owner_labels = (manifest.get("metadata") or {}).get("labels") or {}
    for child in children:  # what kopf.adopt does besides the owner reference
        child["metadata"]["labels"] = {**owner_labels, **child["metadata"]["labels"]}
    return children


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="EmpoRun manifest (YAML; - for stdin)")
    parser.add_argument("--attempt", type=non_negative_int, default=0, help="restart attempt to render (0 = the first)")


def run(args: argparse.Namespace) -> int:
    try:
        docs = load_documents(args.file)
        out: list[dict[str, Any]] = []
        for doc in docs:
            if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict) and not doc["metadata"].get("namespace"):
                doc["metadata"]["namespace"] = "default"
            out.extend(render(doc, args.attempt))
    except (OSError, yaml.YAMLError, ValueError) as exc:  # ValueError: the spec's or a setting's (EnvValueError)
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write("# ownerReferences to the EmpoRun are added at creation, and RayJob names carry the first\n"
                     f"# characters of its uid ({UID_PLACEHOLDER} here): both need the uid the API server gives it.\n")
    sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False, width=120))
    return 0
