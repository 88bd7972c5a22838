"""The `empo` command line. Each subcommand lives in its own module, imported only when used, so
`empo crd` and `empo validate` need neither kopf nor torch."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from . import cli_errors

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS = {
    "crd": ("empo_api.crd_cli", "print the EmpoRun CustomResourceDefinition"),
    "validate": ("empo_api.validate", "check EmpoRun manifests; every error names its field"),
    "render": ("empo_operator.render", "print the manifests the operator would create for a run"),
    "sweep": ("empo_api.sweep", "expand a sweep grid into one EmpoRun manifest per point"),
    "plan": ("empo_api.plan_cli", "estimate GPU memory per learner process and sampler engine of a run"),
    "train": ("empo_trainer.train_cli", "run an EmpoRun on this machine (local Ray)"),
    "rewards": ("empo_trainer.rewards.cli", "score completions offline with the EMPO reward"),
    "eval": ("empo_trainer.evaluation.cli", "evaluate a model on benchmarks"),
    "report": ("empo_trainer.evaluation.report_cli", "write report.html for a run's storage URI"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="empo", description="EMPO: unsupervised RL post-training of LLMs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only in (None, name):
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "__none__")
    args = parser.parse_args(argv)
    try:
        return importlib.import_module(COMMANDS[args.command][0]).run(args)
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
