"""`empo train RUN.yaml`: run an EmpoRun manifest on this machine (local Ray)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from empo_api.cli_errors import positive_int
from empo_api.errors import SpecError
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
    from . import driver, preemption
    from .data import DatasetError
    from .model_source import ModelSourceError
    from .storage import StorageError

    empo_run = load_run(args.manifest, args.output)
    terminate_like_interrupt()
    try:
        summary = driver.run(empo_run, steps=args.steps, fresh=args.fresh, progress=not args.no_progress,
                             num_cpus=args.num_cpus)
    except preemption.Preempted:
        line = "preempted before training started: nothing to checkpoint; the next run resumes from the latest checkpoint"
        print(f"{args.manifest}: {line}", file=sys.stderr)
        from .status_reporter import ProgressReporter

        reporter = ProgressReporter.from_env()
        reporter.preempted(None, line)
        reporter.close()
        return preemption.EXIT_PREEMPTED
    except (SpecError, DatasetError, ModelSourceError, StorageError) as exc:
        # Input the user can fix, or storage that stayed down past its window: one line, no
        # traceback (an actor's error comes wrapped in Ray's, whose text is the actor's traceback).
        print(f"{args.manifest}: {driver.one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        driver.shutdown()
    print("\n".join(summary.lines()))
    return preemption.EXIT_PREEMPTED if summary.preempted else 0
