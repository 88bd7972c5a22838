"""One-step-off against synchronous training: `empo train` end to end in three sampler modes.

    python benchmarks/bench_async.py [--workloads demo long] [--modes transformers vllm-sync vllm-1off]

Modes (everything else as in the manifest):
- transformers: the colocated transformers sampler (what `make demo` used before);
- vllm-sync:    a separate vLLM engine (vLLM's CPU build here), sampler.maxStaleness 0: sample, then update;
- vllm-1off:    the same engine with sampler.maxStaleness 1: it samples generation n+1 while the
                learner updates on generation n, and gets the new weights while it does.
Workloads: `demo` is examples/local-cpu.yaml as `make demo` runs it (24 steps, evaluations at steps
0, 12 and 24 on the held-out questions); `long` is the same with 96-token completions, --long-steps
steps and no evaluation.

Per run it prints and writes (benchmarks/results/async.json): wall seconds end to end (start-up
included, as a user waits for it), steps per hour and completion tokens per second over the steps
after the first (median step time; steps that ran an evaluation left out), the staleness seen, and
the demo's held-out accuracy. The machine's load average is recorded before and after each run:
timings on a shared machine are only comparable under the same load, so nothing asserts on them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODES = {
    "transformers": {"backend": "transformers", "replicas": 1, "gpusPerReplica": 0},
    "vllm-sync": {"backend": "vllm", "replicas": 1, "gpusPerReplica": 0, "maxStaleness": 0},
    "vllm-1off": {"backend": "vllm", "replicas": 1, "gpusPerReplica": 0, "maxStaleness": 1},
}


def manifest(workload: str, mode: str, long_steps: int, long_tokens: int, demo_steps: int | None = None) -> dict:
    doc = yaml.safe_load((REPO / "examples/local-cpu.yaml").read_text())
    spec = doc["spec"]
    spec["dataset"]["uri"] = str(REPO / spec["dataset"]["uri"])
    spec["sampler"] = dict(MODES[mode])
    spec["storage"]["checkpointEvery"] = 1000  # the final checkpoint only: the same in every mode
    if workload == "demo" and demo_steps:  # a shorter demo: speed only, no held-out evaluation
        spec["algorithm"]["steps"] = demo_steps
        spec["eval"] = {"benchmarks": []}
    if workload == "long":
        spec["algorithm"].update(maxCompletionLength=long_tokens, steps=long_steps)
        spec["eval"] = {"benchmarks": []}
    doc["metadata"]["name"] = f"bench-{workload}-{mode}"
    return doc


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(workload: str, mode: str, long_steps: int, long_tokens: int, work: Path, demo_steps: int | None = None) -> dict:
    doc = manifest(workload, mode, long_steps, long_tokens, demo_steps)
    path = work / f"{workload}-{mode}.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = work / f"{workload}-{mode}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               RAY_USAGE_STATS_ENABLED="0")
    env.setdefault("EMPO_CACHE_DIR", str(REPO / ".cache" / "empo"))
    load_before = _load()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "empo_cli", "train", str(path), "--output", str(out),
                           "--fresh", "--no-progress"], env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{workload}/{mode} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    root = out / "default" / doc["metadata"]["name"]
    records = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines() if line]
    eval_steps = {int(p.stem.split("-")[1]) for p in (root / "eval").glob("step-*.json")} if (root / "eval").exists() else set()
    steady = [r for r in records if r["step"] > 1 and r["step"] not in eval_steps]
    seconds = statistics.median(r["step_seconds"] for r in steady) if steady else float("nan")
    tokens = statistics.median(r["completion_tokens"] for r in steady) if steady else 0
    heldout = {}
    for p in sorted((root / "eval").glob("step-*.json")) if (root / "eval").exists() else []:
        heldout[int(p.stem.split("-")[1])] = _accuracy(json.loads(p.read_text()))
    return {
        "workload": workload, "mode": mode, "steps": len(records), "wall_seconds": round(wall, 1),
        "first_step_seconds": records[0]["step_seconds"],
        "median_step_seconds": round(seconds, 2), "steps_per_hour": round(3600 / seconds, 1),
        "tokens_per_second": round(tokens / seconds, 1), "median_completion_tokens": tokens,
        "staleness": sorted({r.get("staleness") for r in records}, key=lambda v: -1 if v is None else v),
        "median_rollout_wait_seconds": _median(steady, "rollout_wait_seconds"),
        "median_weight_sync_seconds": _median(steady, "weight_sync_seconds"),
        "heldout": heldout, "load_before": load_before, "load_after": _load(),
        "summary": [line for line in proc.stdout.splitlines() if line.startswith(("run ", "  eval:"))],
    }


def _median(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if key in r]
    return round(statistics.median(values), 3) if values else None


def _accuracy(report: dict) -> float | None:
    """The held-out greedy accuracy of an eval/step-N.json (its first benchmark)."""
    for key in ("benchmarks", "results"):
        items = report.get(key)
        if isinstance(items, dict):
            items = list(items.values())
        for item in items or []:
            for k in ("accuracy", "greedy_accuracy", "pass@1"):
                if isinstance(item, dict) and isinstance(item.get(k), (int, float)):
                    return round(item[k], 3)
    text = json.dumps(report)
    m = re.search(r'"accuracy": ([0-9.]+)', text)
    return round(float(m.group(1)), 3) if m else None


def table(rows: list[dict]) -> str:
    head = ("| workload | mode | wall s (start-up incl.) | first step s | median step s | steps/hour | tokens/s "
            "| staleness | held-out (step: acc) | load avg before -> after |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        held = ", ".join(f"{k}: {v}" for k, v in r["heldout"].items()) or "-"
        lines.append(f"| {r['workload']} | {r['mode']} | {r['wall_seconds']} | {r['first_step_seconds']} | "
                     f"{r['median_step_seconds']} | {r['steps_per_hour']} | {r['tokens_per_second']} | "
                     f"{r['staleness']} | {held} | {r['load_before'][0]} -> {r['load_after'][0]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["demo", "long"], choices=["demo", "long"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--long-steps", type=int, default=4)
    parser.add_argument("--long-tokens", type=int, default=96)
    parser.add_argument("--demo-steps", type=int, default=None,
                        help="stop the demo after this many steps, without evaluations (speed only)")
    parser.add_argument("--out", default=str(RESULTS / "async.json"))
    args = parser.parse_args(argv)
    rows = []
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {"runs": []}
    tmp = tempfile.mkdtemp(prefix="empo-bench-async-")  # kept: a run that fails leaves its metrics to read
    print(f"runs under {tmp}", flush=True)
    for workload in args.workloads:
        for mode in args.modes:
            row = run(workload, mode, args.long_steps, args.long_tokens, Path(tmp), args.demo_steps)
            row["demo_steps"] = args.demo_steps if workload == "demo" else None
            rows.append(row)
            print(json.dumps(row), flush=True)
            # keep what finished: a later run that fails or is stopped loses only itself
            kept = [r for r in previous["runs"] if (r["workload"], r["mode"]) not in
                    {(x["workload"], x["mode"]) for x in rows}]
            out.write_text(json.dumps({"cpus": os.cpu_count(), "runs": kept + rows}, indent=1) + "\n")
    print(table(rows))
    by = {(r["workload"], r["mode"]): r for r in rows}
    for workload in args.workloads:
        sync, off = by.get((workload, "vllm-sync")), by.get((workload, "vllm-1off"))
        if sync and off:
            print(f"{workload}: one-step-off / synchronous engine, steps per hour: "
                  f"{off['steps_per_hour'] / sync['steps_per_hour']:.2f}x; end to end: "
                  f"{sync['wall_seconds'] / off['wall_seconds']:.2f}x")


if __name__ == "__main__":
    main()
