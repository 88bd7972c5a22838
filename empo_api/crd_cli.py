"""`empo crd`: print (or write) the generated CRD."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .crd import crd_yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    text = crd_yaml()
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
