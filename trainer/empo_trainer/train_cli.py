"""`empo train RUN.yaml`: run an EmpoRun manifest on this machine (local Ray)."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from pydantic import ValidationError

from empo_api.cli_errors import positive_int
from empo_api.models import EmpoRun
from empo_api.validate import ManifestYamlError, load_documents, model_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, help="an EmpoRun manifest (the file kubectl would apply)")
    parser.add_argument("--output", help="storage URI or folder for this run (overrides spec.storage.uri)")
    parser.add_argument("--steps", type=positive_int, help="stop after this many optimizer steps (overrides the spec)")
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start from step 0")
    parser.add_argument("--num-cpus", type=positive_int, help="CPUs for the local Ray (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def load_run(path: Path, output: str | None = None) -> EmpoRun:
    try:
        docs = load_documents(path)
    except OSError as exc:
        raise SystemExit(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ManifestYamlError as exc:
        raise SystemExit(f"{path}: {exc}") from None
    runs = [d for d in docs if isinstance(d, dict) and d.get("kind") == "EmpoRun"]
    if len(runs) != 1:
        raise SystemExit(f"{path}: expected exactly one EmpoRun document, found {len(runs)}")
    doc = runs[0]
    if output:
        if "://" not in output:  # a folder given on this machine's command line: '../runs' is fine here
            output = os.path.abspath(os.path.expanduser(output))
        doc.setdefault("spec", {}).setdefault("storage", {})["uri"] = output
    try:
        return EmpoRun.model_validate(doc)
    except ValidationError as exc:
        lines = "\n".join(f"  {e}" for e in model_errors(exc))
        raise SystemExit(f"{path}: invalid EmpoRun:\n{lines}") from None


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def terminate_like_interrupt() -> None:
    """SIGTERM (kill, a closing terminal's session, a container stop) outside the training loop
    ends the run like Ctrl-C: the `finally` below shuts Ray down, so its processes end with the
    driver (the lifeline's reaper ends them if the driver dies without a chance to, kill -9
    included). Inside driver.run a SIGTERM is a preemption request instead: the run stops after a
    checkpoint of the step in progress and exits EXIT_PREEMPTED (preemption.py)."""
    signal.signal(signal.SIGTERM, _interrupt)


def run(args: argparse.Namespace) -> int:
    from . import driver

    empo_run = load_run(args.manifest, args.output)
    terminate_like_interrupt()
    return driver.run_to_exit(empo_run, str(args.manifest), steps=args.steps, fresh=args.fresh,
                              progress=not args.no_progress, num_cpus=args.num_cpus)
