"""Device check: a local `empo train` on ONE GPU with a vLLM sampler engine of its own (one step
off the learner: it samples with the weights of the previous optimizer step, synced before each
rollout), sharing the device with the learner by memory fraction.

Run on a GPU machine with the trainer image's environment (CUDA vllm); about 3-5 minutes:

    python benchmarks/gpu_check_one_gpu.py [--model bundled:smollm2-135m-instruct] [--steps 3]

It trains examples/tiny.yaml with sampler.backend vllm (replicas 1, gpusPerReplica 1,
gpuMemoryUtilization --fraction) and learner.gpusPerReplica 1, CUDA_VISIBLE_DEVICES=0, and checks:
1. the run ends with exit 0 and metrics for every step (before: NCCL refused two ranks on one device);
2. the learner said it shares the GPU and synced through host memory (no NCCL group);
3. step 1 pushed nothing (the engine already held the start weights), later steps pushed weights
   (every one with --max-staleness 0; with one-step-off, the default, the push for the step after);
4. TRL's recomputed log-probs agree with the engine's (sampling_logp_difference/mean < --atol) on every
   step sampled with the learner's current weights (staleness 0), so the synced weights were the learner's;
5. no step's rollout came from weights more than sampler.maxStaleness steps behind.
Prints one JSON line, writes benchmarks/results/gpu_check_one_gpu.json; exit 0 only when all passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.3, help="sampler.gpuMemoryUtilization")
    parser.add_argument("--atol", type=float, default=0.02)
    parser.add_argument("--timeout", type=int, default=480)
    parser.add_argument("--max-staleness", type=int, default=1, help="sampler.maxStaleness (0: synchronous)")
    args = parser.parse_args()

    doc = yaml.safe_load((REPO / "examples/tiny.yaml").read_text())
    spec = doc["spec"]
    spec["model"] = {"source": args.model, "dtype": "bfloat16"}
    spec["dataset"]["uri"] = str(REPO / "data/local/arith-train.jsonl")
    spec["sampler"] = {"backend": "vllm", "replicas": 1, "gpusPerReplica": 1, "gpuMemoryUtilization": args.fraction,
                       "maxStaleness": args.max_staleness}
    spec["learner"] = {"gpusPerReplica": 1, "precision": "bf16", "gradientCheckpointing": False}
    spec["eval"] = {"benchmarks": []}
    work = Path(tempfile.mkdtemp(prefix="empo-one-gpu-"))
    (work / "run.yaml").write_text(yaml.safe_dump(doc))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0],
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-m", "empo_cli", "train", str(work / "run.yaml"), "--output",
                                 str(work / "out"), "--steps", str(args.steps), "--no-progress"], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=args.timeout)
        rc, output = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as exc:
        rc, output = 124, f"timed out after {args.timeout}s: {exc.stdout or ''}{exc.stderr or ''}"
    metrics = work / "out" / doc["metadata"].get("namespace", "default") / doc["metadata"]["name"] / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    checks = {
        "exit_0": rc == 0,
        "every_step": [r["step"] for r in records] == list(range(1, args.steps + 1)),
        "shared_gpu_said": "share GPU" in output and "host memory" in output,
        "first_sync_skipped": bool(records) and records[0].get("weight_sync_gib") == 0,
        "later_syncs_pushed": len(records) > 1 and (all if args.max_staleness == 0 else any)(
            r.get("weight_sync_gib", 0) > 0 for r in records[1:]),
        "logprobs_agree": bool(records) and all(
            r.get("sampling/sampling_logp_difference/mean", 1.0) < args.atol for r in records if r.get("staleness") == 0),
        "staleness_bounded": bool(records) and all(0 <= r.get("staleness", -1) <= args.max_staleness for r in records),
    }
    report = {"checks": checks, "passed": all(checks.values()), "seconds": round(time.perf_counter() - started, 1),
              "fraction": args.fraction, "model": args.model,
              "steps": [{k: r.get(k) for k in ("step", "weight_sync_seconds", "weight_sync_gib", "step_seconds",
                                                "staleness", "sampling/sampling_logp_difference/mean")} for r in records]}
    if not report["passed"]:
        report["output_tail"] = output[-3000:]
    print(json.dumps(report), flush=True)
    (REPO / "benchmarks/results").mkdir(exist_ok=True)
    (REPO / "benchmarks/results/gpu_check_one_gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
