"""`empo sweep`: expand a grid of spec values into one EmpoRun manifest per grid point.

A grid file names a base EmpoRun (a file next to it, or embedded) and a map of dotted spec
paths to lists of values:

    base: ../base/emporun.yaml          # or  template: {apiVersion: empo.dev/v1alpha1, ...}
    grid:
      algorithm.temperature: [0.6, 0.9]
      algorithm.numGenerations: [4, 7]

The result is the cartesian product, in the file's key and value order. Names are the base name
plus a short slug of the point and a hash of it, so they are deterministic (a GitOps folder does
not churn), unique (the hash), readable (the slug) and valid DNS labels of at most 63 characters.
Every manifest is checked with the CRD schema and the models before anything is written.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from .manifest_yaml import ManifestYamlError, load_yaml_documents
from .validate import validate_manifest

MAX_NAME = 63
HASH_CHARS = 6
# Identify generated manifests so `kubectl get emporuns -l empo.dev/sweep=<base>` lists a sweep
# and `--prune` deletes only files this sweep wrote.
SWEEP_LABEL = "empo.dev/sweep"
POINT_ANNOTATION = "empo.dev/sweep-point"
GRID_KEYS = {"base", "template", "grid"}


class SweepError(ValueError):
    """A grid that cannot be expanded; the message names the grid key at fault."""


# ---------------------------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------------------------


def set_path(spec: dict[str, Any], dotted: str, value: Any) -> None:
    """Set spec[a][b][c] = value for 'a.b.c', creating missing mappings on the way."""
    parts = dotted.split(".")
    node = spec
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise SweepError(f"grid key '{dotted}': spec.{where} is a {type(child).__name__}, not a mapping")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def _key_token(dotted: str) -> str:
    # 'algorithm.numGenerations' -> 'ng', 'algorithm.temperature' -> 't': first letter + humps.
    last = dotted.rsplit(".", 1)[-1]
    return (last[:1] + "".join(c for c in last[1:] if c.isupper())).lower()


def _value_token(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = "-".join(_value_token(v) for v in value)
    elif isinstance(value, dict):
        text = ""  # too long to spell out; the hash tells points apart
    else:
        text = str(value).lower().replace(".", "p")  # 0.6 -> 0p6, 1e-06 -> 1e-06
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "", text)).strip("-")


def point_hash(point: dict[str, Any]) -> str:
    """A short, stable hash of one grid point (independent of key order)."""
    canonical = json.dumps(point, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_CHARS]


def point_name(base_name: str, point: dict[str, Any]) -> str:
    """'<base>-<slug>-<hash>', a DNS label of at most 63 characters; the slug is cut first, then the base."""
    slug = "-".join(t for t in (_key_token(k) + _value_token(v) for k, v in point.items()) if t)
    digest = point_hash(point)
    room = MAX_NAME - len(digest) - 1
    head = f"{base_name}-{slug}" if slug else base_name
    if len(head) > room:
        head = head[:room]
    return f"{head.rstrip('-')}-{digest}"


MAX_POINTS = 1000


def expand_grid(base: dict[str, Any], grid: dict[str, Any]) -> list[dict[str, Any]]:
    """One EmpoRun manifest per point of the grid's cartesian product, in grid order.

    `base` is an EmpoRun manifest; `grid` maps dotted paths under spec to non-empty lists of
    values. The base is not modified. Raises SweepError for a grid that cannot be expanded;
    whether each result is a valid EmpoRun is for validate_manifest to say.
    """
    if not isinstance(base, dict) or not isinstance(base.get("metadata"), dict) or not base["metadata"].get("name"):
        raise SweepError("the base manifest needs metadata.name (the prefix of every generated name)")
    if not isinstance(base.get("spec"), dict):
        raise SweepError("the base manifest needs a spec mapping")
    if not isinstance(grid, dict) or not grid:
        raise SweepError("grid: expected a mapping of dotted spec paths to lists of values, e.g. "
                         "{'algorithm.temperature': [0.6, 0.9]}")
    for key, values in grid.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*", key):
            raise SweepError(f"grid key {key!r}: expected a dotted path under spec, e.g. algorithm.temperature")
        if key == "spec" or key.startswith("spec."):
            raise SweepError(f"grid key '{key}': paths are relative to spec; write '{key.removeprefix('spec.')}'")
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid key '{key}': expected a non-empty list of values, got {values!r}")
        seen = [json.dumps(v, sort_keys=True) for v in values]
        dupes = sorted({s for s in seen if seen.count(s) > 1})
        if dupes:
            raise SweepError(f"grid key '{key}': repeated value(s) {', '.join(dupes)} would give duplicate runs")

    points = 1
    for values in grid.values():
        points *= len(values)
    if points > MAX_POINTS:  # each point is a run on the cluster; a typo should not create millions
        raise SweepError(f"grid: {points} points; at most {MAX_POINTS} runs per sweep (split the grid)")

    base_name = base["metadata"]["name"]
    keys = list(grid)
    manifests = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values))
        doc = copy.deepcopy(base)
        doc.pop("status", None)
        for key, value in point.items():
            set_path(doc["spec"], key, value)
        meta = doc["metadata"]
        meta["name"] = point_name(base_name, point)
        meta.setdefault("labels", {})[SWEEP_LABEL] = base_name
        meta.setdefault("annotations", {})[POINT_ANNOTATION] = json.dumps(point, sort_keys=True, separators=(",", ":"))
        manifests.append(doc)
    return manifests


# ---------------------------------------------------------------------------------------------
# I/O
# ---------------------------------------------------------------------------------------------


def load_grid(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a grid file; return (base manifest, grid). A `base` path is relative to the grid file."""
    try:
        docs = load_yaml_documents(path.read_bytes())
    except (OSError, ManifestYamlError) as exc:
        raise SweepError(f"{path}: cannot read: {exc}") from None
    doc = docs[0] if len(docs) == 1 else None
    if not isinstance(doc, dict):
        raise SweepError(f"{path}: expected a mapping with 'base' (or 'template') and 'grid'")
    unknown = sorted(set(doc) - GRID_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: base, template, grid")
    if ("base" in doc) == ("template" in doc):
        raise SweepError(f"{path}: give exactly one of 'base' (a manifest file) or 'template' (an embedded manifest)")
    if "base" in doc:
        base_path = (path.parent / str(doc["base"])).resolve()
        try:
            docs = load_yaml_documents(base_path.read_bytes())
        except (OSError, ManifestYamlError) as exc:
            raise SweepError(f"{path}: base {base_path}: cannot read: {exc}") from None
        if len(docs) != 1:
            raise SweepError(f"{path}: base {base_path} must hold exactly one EmpoRun, found {len(docs)} documents")
        base = docs[0]
    else:
        base = doc["template"]
    return base, doc.get("grid")


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


def _generated_by(path: Path, sweep: str) -> bool:
    try:
        docs = load_yaml_documents(path.read_bytes())
    except (OSError, ManifestYamlError):
        return False  # not ours to delete
    meta = docs[0].get("metadata") if len(docs) == 1 and isinstance(docs[0], dict) else None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return isinstance(labels, dict) and labels.get(SWEEP_LABEL) == sweep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", type=Path, help="grid file: base (or template) and grid of dotted spec paths")
    parser.add_argument("--out", required=True, help="folder to write <name>.yaml files into; - prints a YAML stream")
    parser.add_argument("--prune", action="store_true",
                        help="delete manifests in --out that this sweep wrote earlier but no longer produces")


def run(args: argparse.Namespace) -> int:
    try:
        base, grid = load_grid(args.grid)
        manifests = expand_grid(base, grid)
    except SweepError as exc:
        print(f"empo sweep: {exc}", file=sys.stderr)
        return 2
    bad = 0
    for doc in manifests:
        for err in validate_manifest(doc):
            print(f"{doc['metadata']['name']}: {err}", file=sys.stderr)
            bad += 1
    if bad:
        print(f"empo sweep: {bad} error(s); nothing written", file=sys.stderr)
        return 1

    if args.out == "-":
        sys.stdout.write("---\n".join(_dump(d) for d in manifests))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = {f"{d['metadata']['name']}.yaml" for d in manifests}
    for doc in manifests:
        (out / f"{doc['metadata']['name']}.yaml").write_text(_dump(doc))
    pruned = 0
    if args.prune:
        sweep = base["metadata"]["name"]
        for stale in sorted(out.glob("*.yaml")):
            if stale.name not in wanted and _generated_by(stale, sweep):
                stale.unlink()
                pruned += 1
    print(f"wrote {len(manifests)} EmpoRun manifest(s) to {out}" + (f", pruned {pruned}" if pruned else ""))
    return 0
