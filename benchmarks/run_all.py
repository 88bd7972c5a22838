"""`make bench`: every benchmark, one after another, each printing its own figures.

Each writes benchmarks/results/<name>.json; this prints a one-line verdict per benchmark and exits
non-zero if one crashed (a missed target is a figure to read, not a crash).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Smaller than their defaults where the default would take long on 2 cores.
ARGS = {
    "bench_storage.py": ["--size-mb", "1024"],
}


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *ARGS.get(script.name, [])])
        print(f"=== {script.name}: exit {code} in {time.perf_counter() - started:.0f}s", flush=True)
        if code:
            failed.append(script.name)
    print("\nresults in", HERE / "results")
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
