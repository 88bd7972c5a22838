"""`empo eval` and `empo report` as a user runs them (subprocesses, the tiny model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from empo_api.models import StorageSpec
from empo_trainer.storage import open_run_storage


def _empo(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "empo_cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=cwd)


def test_empo_eval_writes_results_json(tmp_path):
    out = tmp_path / "results.json"
    proc = _empo("eval", "--model", "bundled:tiny-random", "--benchmarks", "arith-heldout,amc23", "--limit", "2",
                 "--k", "2", "--temperature", "1.0", "--max-new-tokens", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "arith-heldout" in proc.stdout and "maj@2" in proc.stdout
    results = json.loads(out.read_text())
    assert set(results["accuracy"]) == {"arith-heldout", "amc23"}
    assert results["settings"]["model"] == "bundled:tiny-random" and results["settings"]["k"] == 2
    bench = results["benchmarks"]["amc23"]
    assert bench["count"] == 2 and bench["metric"] == "avg@2" and bench["metrics"]["pass@2"] == 0.0
    record = bench["records"][0]
    assert record["gold"] == ["27"] and len(record["completions"]) == 2
    assert set(record["completions"][0]) == {"text", "answer", "correct", "cluster", "tokens"}


def test_empo_eval_rejects_an_unknown_benchmark_before_loading_a_model():
    proc = _empo("eval", "--model", "bundled:tiny-random", "--benchmarks", "math500,nope")
    assert proc.returncode == 2
    assert "unknown benchmark 'nope'" in proc.stderr and "math500" in proc.stderr


def test_empo_report_on_a_local_run(tmp_path):
    run = open_run_storage(StorageSpec(uri=str(tmp_path / "runs")), "ns", "r")
    for step in (1, 2, 3):
        run.append_metrics({"step": step, "reward": 0.1 * step, "semantic_entropy": 1.0 / step})
    proc = _empo("report", run.uri, "--out", str(tmp_path / "site" / "index.html"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "site" / "index.html").read_text().count("data:image/png;base64,") == 2
    assert (tmp_path / "site" / "plots" / "semantic_entropy.png").stat().st_size > 5000
    missing = _empo("report", str(tmp_path / "no-such-run"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
