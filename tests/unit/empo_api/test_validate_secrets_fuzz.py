"""`empo validate` on manifests from a second, independent generator (fuzz_manifests.py: odd YAML
tags and scalars anywhere, credentials where they would leak), driven by hypothesis: exit status 0
or 1, never a traceback, every file on the command line judged (a missing one included), and no
output repeating 8 characters of any secret. 2,000 manifests by default, in batches of 10 per
command line; benchmarks/fuzz_validate.py runs the same generator for longer."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from empo_cli import main as cli

from .fuzz_manifests import leaked, manifest_case

REPO = Path(__file__).resolve().parents[3]
BATCH = 10
EXAMPLES = int(os.environ.get("EMPO_FUZZ_EXAMPLES", "200"))  # x BATCH manifests


def _validate(paths: list[Path]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["validate", *map(str, paths)])
    return code, out.getvalue() + err.getvalue()


def _check(code: int, output: str, paths: list[Path], secrets: list[str]) -> None:
    assert code in (0, 1), output[-2000:]
    assert "Traceback" not in output and "internal error" not in output, output[-2000:]
    for path in paths:  # each judged on its own: one's refusal (or absence) stops no other
        assert any(line.startswith(f"{path}") for line in output.splitlines()), (path, output[-2000:])
    found = leaked(output, secrets)
    assert not found, f"secrets repeated: {found}\n{output[-3000:]}"


def test_generated_manifests_never_crash_or_quote_secrets(tmp_path):
    stats = {"manifests": 0, "secrets": 0, "ok": 0, "refused": 0, "unreadable": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.randoms(use_true_random=False))
    def batch(rnd):
        cases = [manifest_case(rnd) for _ in range(BATCH)]
        paths = []
        for i, case in enumerate(cases):
            paths.append(tmp_path / f"m{i}.yaml")
            paths[-1].write_bytes(case.text)
        paths.insert(BATCH // 2, tmp_path / "missing.yaml")  # a file that cannot be read, mid-line
        code, output = _validate(paths)
        _check(code, output, paths, [s for c in cases for s in c.secrets])
        stats["manifests"] += len(cases)
        stats["secrets"] += sum(len(c.secrets) for c in cases)
        for path in paths[:-1]:
            lines = [line for line in output.splitlines() if line.startswith(f"{path}")]
            kind = "ok" if all(": ok (" in line for line in lines) else (
                "unreadable" if any("cannot read" in line for line in lines) else "refused")
            stats[kind] += 1

    batch()
    print(f"\nfuzz (independent generator): {stats}, 0 crashes, 0 secrets repeated")
    assert stats["manifests"] >= EXAMPLES * BATCH
    assert min(stats["ok"], stats["refused"], stats["unreadable"]) > 0  # it reaches every path


def test_a_real_process_exits_1_without_traceback_or_secrets(tmp_path):
    """The same, through `empo validate` in a process of its own (its real exit status and streams)."""
    import random

    rnd = random.Random(28)
    cases = [manifest_case(rnd) for _ in range(150)]
    paths = []
    for i, case in enumerate(cases):
        paths.append(tmp_path / f"m{i}.yaml")
        paths[-1].write_bytes(case.text)
    paths.insert(3, tmp_path / "missing.yaml")
    paths.insert(7, tmp_path)  # a folder
    result = subprocess.run([sys.executable, "-m", "empo_cli", "validate", *map(str, paths)], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONIOENCODING": "ascii"})
    _check(result.returncode, result.stdout + result.stderr, paths, [s for c in cases for s in c.secrets])
    assert result.returncode == 1 and not result.stderr
