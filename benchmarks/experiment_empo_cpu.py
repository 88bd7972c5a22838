"""Does EMPO learn on a CPU? SmolLM2-135M-Instruct, unlabeled one-digit arithmetic, held-out eval.

Arms: the base model; EMPO (semantic-entropy reward, answers never seen); supervised GRPO
(reward: gold, the upper reference). Each trained arm runs for several seeds with the real
`empo train` (local Ray, TRL GRPOTrainer); every model is evaluated on a disjoint held-out split:
greedy pass@1, avg@k and maj@k of k samples at the training temperature, semantic entropy.

    nice -n 5 .venv/bin/python benchmarks/experiment_empo_cpu.py --seeds 0 1 2

Prints the table and writes benchmarks/results/experiment.json and experiment.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "trainer"), str(ROOT / "operator")]
os.environ.setdefault("EMPO_CACHE_DIR", str(ROOT / ".cache" / "empo"))
for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                   "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0", "MPLBACKEND": "Agg",
                   "OMP_NUM_THREADS": "1"}.items():
    os.environ.setdefault(key, value)

from benchmarks.experiment import runner, tasks  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ARMS = {"empo": "EMPO (no labels)", "gold": "GRPO, gold reward"}


def mean_spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def eval_subprocess(model: str, heldout: Path, out: Path, settings: runner.Settings,
                    env: dict[str, str] | None = None) -> dict:
    """Evaluate in a child process (one CPU thread, memory freed when it ends)."""
    cmd = [sys.executable, __file__, "--eval-one", model, "--heldout", str(heldout), "--eval-out", str(out),
           "--settings", json.dumps(asdict(settings))]
    with out.with_suffix(".log").open("w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        raise RuntimeError(f"evaluation of {model} failed (exit {rc}); see {out.with_suffix('.log')}")
    return json.loads(out.read_text())


def curves(metrics_by_seed: list[list[dict]], key: str) -> list[float | None]:
    """Per step, the mean of `key` over seeds."""
    steps = max((len(m) for m in metrics_by_seed), default=0)
    out = []
    for i in range(steps):
        values = [m[i][key] for m in metrics_by_seed if i < len(m) and isinstance(m[i].get(key), (int, float))]
        out.append(statistics.fmean(values) if values else None)
    return out


def plot(result: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    colors = {"empo": "tab:blue", "gold": "tab:orange"}
    for arm, label in ARMS.items():
        c = result["curves"].get(arm)
        if not c:
            continue
        x = list(range(1, len(c["reward"]) + 1))
        axes[0].plot(x, c["reward"], label=f"{label}: its reward", color=colors[arm])
        axes[0].plot(x, c["label_accuracy"], "--", label=f"{label}: majority = gold", color=colors[arm], alpha=0.6)
        axes[1].plot(x, c["semantic_entropy"], label=label, color=colors[arm])
    axes[0].set(title="training reward (mean over seeds)", xlabel="step")
    axes[0].legend(fontsize=7)
    axes[1].set(title="semantic entropy of rollouts (nats)", xlabel="step")
    axes[1].legend(fontsize=7)
    k = result["settings"]["eval_k"]
    metrics = ["greedy", f"avg@{k}", f"maj@{k}"]
    arms = [a for a in ("base", "empo", "gold") if a in result["table"]]
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        xs = [j + i * width for j in range(len(metrics))]
        axes[2].bar(xs, [result["table"][arm][m]["mean"] for m in metrics], width, alpha=0.8,
                    label={"base": "base", **ARMS}[arm])
        # one dot per seed: with 3 seeds a standard deviation bar hides a collapsed run
        for run in (r for r in result["runs"] if r["arm"] == arm):
            axes[2].plot(xs, [run["eval"][m] for m in metrics], "k.", markersize=5)
    axes[2].set_xticks([j + width * (len(arms) - 1) / 2 for j in range(len(metrics))], metrics)
    axes[2].set(title=f"held-out accuracy ({result['settings']['eval_limit']} questions; dots: seeds)", ylim=(0, 1.02))
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_table(result: dict) -> None:
    k = result["settings"]["eval_k"]
    cols = ["greedy", f"avg@{k}", f"maj@{k}", "semantic_entropy"]
    print(f"{'arm':<22}" + "".join(f"{c:>20}" for c in cols))
    for arm, row in result["table"].items():
        label = {"base": "base", **ARMS}[arm]
        print(f"{label:<22}" + "".join(f"{row[c]['mean']:>12.3f} ± {row[c]['std']:<5.3f}" for c in cols))


def run_experiment(train_rows: list[dict], heldout_rows: list[dict], settings: runner.Settings, seeds: list[int],
                   arms: list[str], parallel: int, work: Path, out: Path, keep_checkpoints: bool, description: str,
                   script: str, reuse: bool = False) -> dict:
    """Train every arm for every seed with `empo train` on train_rows (question, answer), evaluate
    each final checkpoint and the base model on heldout_rows; write out (.json and .png).

    reuse: keep what an interrupted invocation with the same work folder finished (runs trained
    to the last step, evaluations written); the caller keeps the settings the same."""
    train_file = tasks.write_jsonl(train_rows, work / "data" / "train.jsonl")
    heldout_file = tasks.write_jsonl(heldout_rows, work / "data" / "heldout.jsonl")
    runs_dir, evals_dir = work / "runs", work / "evals"
    evals_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = os.getloadavg()
    slots = runner.CoreSlots(parallel)

    def arm_job(arm: str, seed: int) -> dict:
        name = f"{arm}-s{seed}"
        path = runner.write_manifest(runner.manifest(name, arm, seed, train_file, settings),
                                     work / "manifests" / f"{name}.yaml")
        timing, done = work / f"{name}.train.json", evals_dir / f"{name}.json"
        with slots.env() as env:
            if reuse and len(runner.read_metrics(runs_dir, name)) >= settings.steps and timing.exists():
                seconds = json.loads(timing.read_text())["seconds"]  # trained by an earlier invocation
            else:
                rc, seconds = runner.train(path, runs_dir, settings.steps, work / f"{name}.train.log", env)
                if rc != 0:
                    raise RuntimeError(f"empo train {path} failed (exit {rc}); see {work / f'{name}.train.log'}")
                timing.write_text(json.dumps({"seconds": seconds}))
                print(f"  trained {name} in {seconds:.0f}s", flush=True)
            if reuse and done.exists():
                ev = json.loads(done.read_text())
            else:
                checkpoint = runner.final_checkpoint(runs_dir, name)
                ev = eval_subprocess(str(checkpoint), heldout_file, done, settings, env)
                if not keep_checkpoints:
                    shutil.rmtree(checkpoint)
        print(f"  evaluated {name}: greedy {ev['greedy']:.3f}, avg@{settings.eval_k} {ev[f'avg@{settings.eval_k}']:.3f}"
              f" ({ev['seconds']:.0f}s)", flush=True)
        return {"arm": arm, "seed": seed, "train_seconds": round(seconds, 1), "eval": ev,
                "metrics": runner.read_metrics(runs_dir, name)}

    def base_job() -> dict:
        done = evals_dir / "base.json"
        with slots.env() as env:
            ev = (json.loads(done.read_text()) if reuse and done.exists() else
                  eval_subprocess("bundled:smollm2-135m-instruct", heldout_file, done, settings, env))
        print(f"  evaluated base: greedy {ev['greedy']:.3f}, avg@{settings.eval_k} {ev[f'avg@{settings.eval_k}']:.3f}"
              f" ({ev['seconds']:.0f}s)", flush=True)
        return {"arm": "base", "seed": None, "eval": ev, "metrics": []}

    print(f"{len(train_rows)} train / {len(heldout_rows)} held-out questions; arms {arms}, seeds {seeds}, "
          f"{settings.steps} steps x {settings.prompts_per_step} prompts x {settings.num_generations} samples", flush=True)
    with ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(base_job)] + [pool.submit(arm_job, a, s) for s in seeds for a in arms]
        jobs = [f.result() for f in futures]
    wall = time.perf_counter() - started

    k = settings.eval_k
    cols = ["greedy", f"avg@{k}", f"maj@{k}", "semantic_entropy", "answered"]
    table, curve = {}, {}
    for arm in ["base"] + arms:
        rows = [j for j in jobs if j["arm"] == arm]
        table[arm] = {c: mean_spread([r["eval"][c] for r in rows]) for c in cols}
        if arm != "base":
            ms = [r["metrics"] for r in rows]
            curve[arm] = {key: curves(ms, key) for key in
                          ("reward", "semantic_entropy", "majority_ratio", "label_accuracy", "filtered_fraction")}
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(), "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(wall, 1),
        "command": f"nice -n 5 .venv/bin/python {script} " + " ".join(sys.argv[1:]),
        "model": "bundled:smollm2-135m-instruct",
        "task": {"train": len(train_rows), "heldout": len(heldout_rows), "description": description},
        "prompt": {"system": runner.SYSTEM, "userTemplate": runner.USER_TEMPLATE, "answerFallbacks": True},
        "settings": asdict(settings), "seeds": seeds,
        "table": table, "curves": curve,
        "runs": [{k_: v for k_, v in j.items()} for j in jobs],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print_table(result)
    print(f"wall {wall:.0f}s; load average before {result['load_average_before']}, after {result['load_average_after']}")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--steps", type=int, default=runner.Settings.steps)
    p.add_argument("--lr", type=float, default=runner.Settings.learning_rate)
    p.add_argument("--eval-k", type=int, default=runner.Settings.eval_k)
    p.add_argument("--eval-limit", type=int, default=runner.Settings.eval_limit)
    p.add_argument("--parallel", type=int, default=2, help="runs at once, one CPU thread each")
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "empo" / "experiment")
    p.add_argument("--out", type=Path, default=RESULTS / "experiment.json")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each run's 1.6 GB final checkpoint")
    p.add_argument("--replot", action="store_true", help="only redraw the PNG and table from --out")
    # internal: one evaluation in a child process
    p.add_argument("--eval-one", help=argparse.SUPPRESS)
    p.add_argument("--heldout", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--eval-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.eval_one:
        settings = runner.Settings(**json.loads(args.settings))
        args.eval_out.write_text(json.dumps(runner.evaluate_model(args.eval_one, args.heldout, settings), indent=1))
        return 0

    if args.replot:
        result = json.loads(args.out.read_text())
        plot(result, args.out.with_suffix(".png"))
        print_table(result)
        return 0

    settings = runner.Settings(steps=args.steps, learning_rate=args.lr, eval_k=args.eval_k, eval_limit=args.eval_limit)
    train_rows, heldout_rows = tasks.split()
    run_experiment(train_rows, heldout_rows, settings, args.seeds, args.arms, args.parallel, args.work, args.out,
                   args.keep_checkpoints, "one-digit a + b and a times b, split by operand pair "
                   "(benchmarks/experiment/tasks.py)", "benchmarks/experiment_empo_cpu.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
