"""The `empo` command line. Each subcommand lives in its own module, imported here plainly; a
command module keeps its heavy imports (torch, Ray, vLLM, kopf, the Kubernetes client) inside its
run(), so `empo --help`, `empo crd`, `empo validate` and `empo plan` load none of them
(tests/unit/empo_cli/test_cli_imports.py)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from empo_api import cli_errors, crd_cli, plan_cli, sweep, validate
from empo_operator import render
from empo_trainer import train_cli
from empo_trainer.evaluation import eval_cli, report_cli
from empo_trainer.rewards import rewards_cli

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS = {
    "crd": (crd_cli, "print the EmpoRun CustomResourceDefinition"),
    "validate": (validate, "check EmpoRun manifests; every error names its field"),
    "render": (render, "print the manifests the operator would create for a run"),
    "sweep": (sweep, "expand a sweep grid into one EmpoRun manifest per point"),
    "plan": (plan_cli, "estimate GPU memory per learner process and sampler engine of a run"),
    "train": (train_cli, "run an EmpoRun on this machine (local Ray)"),
    "rewards": (rewards_cli, "score completions offline with the EMPO reward"),
    "eval": (eval_cli, "evaluate a model on benchmarks"),
    "report": (report_cli, "write report.html for a run's storage URI"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="empo", description="EMPO: unsupervised RL post-training of LLMs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][0].run(args)
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:
        if isinstance(exc.code, str):  # SystemExit("message"): a message, exit 2 like every other error
            print(f"empo {args.command}: {exc.code}", file=sys.stderr)
            return cli_errors.EXIT_ERROR
        raise
    except Exception as exc:  # every failure is a message with exit 2, never a traceback
        print(f"empo {args.command}: error: {cli_errors.user_message(exc)}", file=sys.stderr)
        if os.environ.get("EMPO_DEBUG"):
            traceback.print_exc()
        return cli_errors.EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
