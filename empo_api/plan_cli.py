"""`empo plan RUN.yaml`: the capacity plan of a run, per pod and per GPU, before it asks for GPUs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .capacity import ModelShape, known_shape, plan_capacity, render


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, help="an EmpoRun manifest (YAML)")
    parser.add_argument("--gpu-memory", type=float, metavar="GIB",
                        help="memory of one GPU in GiB (default: from the nodeSelector's GPU product label, else 80)")
    parser.add_argument("--model-config", type=Path, metavar="CONFIG_JSON",
                        help="the model's config.json, for a model the plan does not know by name")


def _shape(source: str, config: Path | None) -> ModelShape:
    if config is None and Path(source).expanduser().joinpath("config.json").is_file():
        config = Path(source).expanduser() / "config.json"
    if config is not None:
        return ModelShape.from_config(json.loads(config.read_text()))
    shape = known_shape(source)
    if shape is None:
        raise ValueError(f"spec.model.source {source!r}: its shape is unknown here (no download); "
                         "pass its config.json with --model-config")
    return shape


def run(args: argparse.Namespace) -> int:
    import yaml
    from pydantic import ValidationError

    from .models import parse_run

    try:
        docs = [d for d in yaml.safe_load_all(args.manifest.read_text()) if d]
        if len(docs) != 1:
            raise ValueError(f"expected one EmpoRun, found {len(docs)} documents")
        run_ = parse_run(docs[0])
        plan = plan_capacity(run_.spec, _shape(run_.spec.model.source, args.model_config), args.gpu_memory)
    except (OSError, ValueError, yaml.YAMLError) as exc:  # pydantic's ValidationError is a ValueError
        detail = str(exc) if not isinstance(exc, ValidationError) else "\n".join(
            f"  spec path {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"{args.manifest}: {detail}", file=sys.stderr)
        return 2
    print(f"{args.manifest}: {run_.namespace}/{run_.name}")
    print("\n".join(render(plan)))
    return 0 if plan.fits else 1
