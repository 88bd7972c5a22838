"""`python -m empo_trainer run --config spec.json`: the RayJob entrypoint the operator writes.

The config is the ConfigMap's one key the operator writes: an EmpoRun manifest whose metadata
names the run and whose spec has the operator's defaults applied ({"name", "namespace", "spec"}
is read too). The same driver as `empo train`, joining the Ray cluster KubeRay started.
It exits 0 when the run is done, 2 on a one-line error, and 75 (preemption.EXIT_PREEMPTED) when a
SIGTERM or a preemption request stopped it after a checkpoint: the next attempt resumes from it.

`python -m empo_trainer preempt [--wait S] [--worker]`: the pods' preStop hook (preemption.py);
stdlib only, so nothing heavy is imported before the subcommand is known.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m empo_trainer")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the EmpoRun described by a config file")
    p.add_argument("--config", type=Path, required=True, help="JSON: {name, namespace, spec} or an EmpoRun manifest")
    p.add_argument("--steps", type=int)
    from . import preemption

    preemption.add_arguments(sub.add_parser(
        "preempt", help="preStop hook: have this host's driver checkpoint and exit (or, with --worker, wait for "
                        "this pod's actors to end)"))
    args = parser.parse_args(argv)
    if args.command == "preempt":
        return preemption.main(args)

    from empo_api.models import EmpoRun

    doc = json.loads(args.config.read_text())
    if "kind" not in doc:
        doc = {"apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun",
               "metadata": {"name": doc.get("name") or os.environ["EMPO_RUN_NAME"],
                            "namespace": doc.get("namespace") or os.environ.get("EMPO_RUN_NAMESPACE", "default")},
               "spec": doc["spec"]}
    from . import driver

    return driver.run_to_exit(EmpoRun.model_validate(doc), "empo_trainer", steps=args.steps, progress=False)


if __name__ == "__main__":
    sys.exit(main())
