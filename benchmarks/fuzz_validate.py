"""`empo validate` against the independent manifest generator of tests/unit/empo_api/fuzz_manifests.py, for
longer than the test runs it: odd YAML tags and scalars anywhere, credentials where they would leak.

    python benchmarks/fuzz_validate.py                      # 20,000 manifests
    python benchmarks/fuzz_validate.py --manifests 2000 --seed 7
    python benchmarks/fuzz_validate.py --process --batch 50   # one `empo validate` process per batch

Manifests go to `empo validate` in batches (several files per command line, one of them missing),
in this process (--process: in a process of their own, as a user runs it). Prints the counts:
manifests, crashes (an exit status other than 0 or 1, a traceback, or an internal error), files
left unjudged (a crash stopped the command line before them), manifests whose output repeated 8
characters of a secret, how the manifests ended (ok, refused, unreadable), and the time taken.
Exits 1 when any crash, unjudged file or quoted secret was seen.

Measured (seed 28): 20,000 manifests in process, 0 crashes, 0 unjudged, 0 secrets quoted. Before
issue 28 (--process --batch 20, 2,000 manifests): 30 of 100 command lines crashed, 296 files
were left unjudged, and 631 manifests' output repeated a secret.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.unit.empo_api.fuzz_manifests (the generator the tests use)

from empo_cli import main as cli  # noqa: E402
from tests.unit.empo_api.fuzz_manifests import leaked, manifest_case  # noqa: E402


def run_process(paths: list[Path]) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "empo_cli", "validate", *map(str, paths)], cwd=REPO,
                            capture_output=True, text=True, errors="backslashreplace", timeout=600, env=dict(os.environ))
    return result.returncode, result.stdout + result.stderr


def run_batch(paths: list[Path]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["validate", *map(str, paths)])
        except BaseException as exc:  # what cli.main itself lets through
            code, err = 99, io.StringIO(f"Traceback: {type(exc).__name__}")
    return code, out.getvalue() + err.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifests", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=10, help="manifests per `empo validate` command line")
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--show", type=int, default=3, help="examples of each failure kind to print")
    parser.add_argument("--process", action="store_true", help="run each batch as an `empo validate` process")
    args = parser.parse_args(argv)

    rnd = random.Random(args.seed)
    counts = {"manifests": 0, "secrets put in": 0, "crashes": 0, "files unjudged": 0, "secrets quoted": 0,
              "ok": 0, "refused": 0, "unreadable": 0}
    shown: dict[str, int] = {}
    slowest = 0.0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="empo-fuzz-") as tmp:
        folder = Path(tmp)
        while counts["manifests"] < args.manifests:
            cases = [manifest_case(rnd) for _ in range(min(args.batch, args.manifests - counts["manifests"]))]
            paths = []
            for i, case in enumerate(cases):
                paths.append(folder / f"m{i}.yaml")
                paths[-1].write_bytes(case.text)
            paths.insert(len(paths) // 2, folder / "missing.yaml")
            t0 = time.perf_counter()
            code, output = (run_process if args.process else run_batch)(paths)
            slowest = max(slowest, time.perf_counter() - t0)
            counts["manifests"] += len(cases)
            counts["secrets put in"] += sum(len(c.secrets) for c in cases)
            lines = output.splitlines()
            if code not in (0, 1) or "Traceback" in output or "internal error" in output:
                counts["crashes"] += 1
                _show(shown, "crash", args.show, output)
            for path, case in zip([p for p in paths if p.name != "missing.yaml"], cases):
                mine = [line for line in lines if line.startswith(f"{path}:") or line.startswith(f"{path} (")
                        or line.startswith(f"{path}#")]
                if not mine:
                    counts["files unjudged"] += 1
                    continue
                text = "\n".join(mine)
                kind = "ok" if all(": ok (" in line for line in mine) else (
                    "unreadable" if any("cannot read" in line for line in mine) else "refused")
                counts[kind] += 1
                if leaked(output if code not in (0, 1) else text, case.secrets):
                    counts["secrets quoted"] += 1
                    _show(shown, "secret quoted", args.show, text)
    elapsed = time.perf_counter() - started
    print(f"seed {args.seed}, {args.batch} manifests per command line: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"time {elapsed:.1f}s ({1000 * elapsed / max(1, counts['manifests']):.2f} ms per manifest), "
          f"slowest command line {slowest:.2f}s")
    return 1 if counts["crashes"] or counts["secrets quoted"] or counts["files unjudged"] else 0


def _show(shown: dict[str, int], kind: str, limit: int, text: str) -> None:
    shown[kind] = shown.get(kind, 0) + 1
    if shown[kind] <= limit:
        print(f"--- {kind}:\n{text[-600:]}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
