"""`empo report RUN_URI [--out FILE]`: write report.html for a local run folder or an s3:// run URI."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_URI",
                        help="the run folder: a local path (<storage>/<namespace>/<run>) or s3://bucket/prefix/<namespace>/<run>")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the HTML here (plots/ beside it) instead of into the run folder")
    parser.add_argument("--endpoint", default=None,
                        help="S3 endpoint URL for S3-compatible stores (default: $AWS_ENDPOINT_URL)")


def run(args: argparse.Namespace) -> int:
    from ..storage.errors import StorageError
    from .report import write_report

    endpoint = args.endpoint or os.environ.get("AWS_ENDPOINT_URL") or None
    try:
        path = write_report(args.run, args.out, endpoint=endpoint)
    except (FileNotFoundError, StorageError) as exc:
        print(f"empo report: {exc}", file=sys.stderr)
        return 2
    where = args.run.rstrip("/") + "/report.html" if args.out is None and args.run.startswith("s3://") else str(path)
    print(f"report: {where}")
    return 0
