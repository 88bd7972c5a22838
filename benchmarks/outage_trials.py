"""Storage outages and kill -9 on `empo train`, repeated at random moments, with counts.

    .venv/bin/python benchmarks/outage_trials.py --trials 4 --attack outage --outage-s 30
    .venv/bin/python benchmarks/outage_trials.py --trials 4 --attack kill9
    .venv/bin/python benchmarks/outage_trials.py --trials 2 --attack outage --window-s 0   # before: no window

Each trial trains the tiny smoke run (examples/tiny.yaml, bundled tiny model, `--steps`, checkpoint
every 2 steps) against a SeaweedFS of its own, behind FlakyProxy (tests/integration/trainer/storage/flaky_proxy.py).

- outage: at a random moment between the run's first metrics line and `--spread-s` later, the
  proxy cuts every connection (`--mode reset`: a store restarting or its pod gone) or answers
  503 SlowDown (`--mode 503`) for `--outage-s` seconds; EMPO_STORAGE_OUTAGE_SECONDS=`--window-s`.
- kill9: at a random moment after the first metrics line, SIGKILL to the driver; then counts the
  processes of its local Ray (GCS, raylet, agents, workers: those that inherited EMPO_DRIVER_PID)
  still alive 5 s later, and how long the last one lived.

Then, if the run did not finish, it is started again (resume). Counted per trial: survived (exit 0
without a restart), exit code and whether stderr had a traceback (Ray's `File "..."` lines
included) and how many lines its error had, steps lost and metrics lines lost or duplicated after
the resume, unfinished multipart uploads left after the run, and how many of those the resumed
start aborted. Prints one JSON line per trial and a summary; `--json PATH` writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from empo_trainer import lifeline  # noqa: E402
from tests.plugins.seaweedfs import start_seaweedfs  # noqa: E402
from tests.integration.trainer.storage.flaky_proxy import FlakyProxy  # noqa: E402
from tests.integration.trainer.train_process import observer, start_train, tiny_spec  # noqa: E402


def _env(server, window_s: float | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(server.env())
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1", EMPO_CACHE_DIR=os.environ.get("EMPO_CACHE_DIR", str(REPO / ".cache/empo")),
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    env.pop("RAY_ADDRESS", None)
    if window_s is not None:
        env["EMPO_STORAGE_OUTAGE_SECONDS"] = str(window_s)
    return env


def _error_report(err: str, spec: Path) -> dict:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    traceback = any(ln.lstrip().startswith(("Traceback", 'File "')) or "ray::" in ln for ln in lines)
    last = lines[-1] if lines else ""
    # the closing message is one line: the last, naming the manifest, with no traceback anywhere above
    return {"traceback": traceback, "one_line": last.startswith(f"{spec}: ") and not traceback,
            "last_line": last[:300]}


def _unfinished(server, bucket: str) -> int:
    return len(server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def trial(index: int, args, server, tmp: Path) -> dict:
    rnd = random.Random(args.seed * 1000 + index)
    bucket = server.new_bucket("outage")
    out: dict = {"trial": index, "attack": args.attack}
    with FlakyProxy(server.endpoint) as proxy:
        spec = tiny_spec(tmp, bucket, proxy.endpoint, f"trial-{index}")
        env = _env(server, args.window_s)
        # the observer reads the store directly, not through the proxy the outage cuts
        store = observer(bucket, server.endpoint, f"trial-{index}")
        started = time.monotonic()
        proc = start_train(spec, args.steps, env)
        while proc.poll() is None and not store.exists("metrics.jsonl"):
            time.sleep(0.1)
        delay = rnd.uniform(0.0, args.spread_s)
        time.sleep(delay)
        out["at_s"] = round(time.monotonic() - started, 1)
        out["step_at_attack"] = len(store.read_metrics())
        if proc.poll() is not None:
            out["attack_missed"] = True
        elif args.attack == "outage":
            if args.mode == "503":
                proxy.fail_always = True
            else:
                proxy.down = True
            time.sleep(args.outage_s)
            proxy.fail_always = proxy.down = False
            out["requests_refused"] = proxy.cut + proxy.failed
        else:
            os.kill(proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            proc.wait()
            left = lifeline.heirs(proc.pid)
            out["ray_processes_at_kill"] = len(left)
            while lifeline.heirs(proc.pid) and time.monotonic() - killed < 120:
                time.sleep(0.1)
            out["last_ray_process_gone_after_s"] = round(time.monotonic() - killed, 1) if left else 0.0
            out["ray_processes_after_5s"] = len(left) if out["last_ray_process_gone_after_s"] > 5 else 0
        try:
            _, err = proc.communicate(timeout=args.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            out["hung"] = True
        out["exit"] = proc.returncode
        out["survived"] = proc.returncode == 0
        out["seconds"] = round(time.monotonic() - started, 1)
        if proc.returncode not in (0, -signal.SIGKILL):
            out.update(_error_report(err, spec))
            if args.stderr:
                out["stderr_tail"] = err.splitlines()[-args.stderr:]
        out["unfinished_uploads_after"] = _unfinished(server, bucket)
        if proc.returncode != 0:
            again = start_train(spec, args.steps, env)
            _, err2 = again.communicate(timeout=args.timeout_s)
            out["resume_exit"] = again.returncode
            aborted = [ln for ln in err2.splitlines() if "unfinished multipart uploads" in ln]
            out["uploads_aborted_at_resume"] = int(aborted[0].split("removed ")[1].split()[0]) if aborted else 0
            out["unfinished_uploads_after_resume"] = _unfinished(server, bucket)
        steps = [r["step"] for r in store.read_metrics()]
        out["steps_lost"] = len(set(range(1, args.steps + 1)) - set(steps))
        out["metrics_duplicated"] = len(steps) - len(set(steps))
        latest = store.checkpoints.latest()
        out["latest_step"] = latest.step if latest else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--attack", choices=("outage", "kill9"), default="outage")
    parser.add_argument("--mode", choices=("reset", "503", "mixed"), default="mixed", help="how the store is down")
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--window-s", type=float, default=None, help="EMPO_STORAGE_OUTAGE_SECONDS (default: unset, 120)")
    parser.add_argument("--spread-s", type=float, default=15.0, help="attack within this long after the first step")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--stderr", type=int, default=0, help="keep this many last stderr lines of a failed run")
    args = parser.parse_args()
    mode = args.mode
    results = []
    with tempfile.TemporaryDirectory(prefix="empo-weed-") as short, start_seaweedfs(Path(short)) as server:
        os.environ.update(server.env(), AWS_EC2_METADATA_DISABLED="true")  # the observer's own client
        for i in range(args.trials):
            if mode == "mixed":
                args.mode = ("reset", "503")[i % 2]
            r = trial(i, args, server, Path(short))
            if args.attack == "outage":
                r["mode"] = args.mode
            results.append(r)
            print(json.dumps(r), flush=True)
    args.mode = mode
    n = len(results)
    summary = {
        "attack": args.attack, "trials": n, "outage_s": args.outage_s if args.attack == "outage" else None,
        "window_s": args.window_s, "mode": args.mode,
        "survived": sum(r["survived"] for r in results),
        "failed_exit_2_one_line": sum(r["exit"] == 2 and bool(r.get("one_line")) for r in results),
        "failed_otherwise": sum(r["exit"] not in (0, 2, -signal.SIGKILL) or (r["exit"] == 2 and not r.get("one_line"))
                                for r in results),
        "tracebacks": sum(bool(r.get("traceback")) for r in results),
        "resumed_ok": sum(r.get("resume_exit") == 0 for r in results),
        "steps_lost": sum(r["steps_lost"] for r in results),
        "metrics_duplicated": sum(r["metrics_duplicated"] for r in results),
        "unfinished_uploads_left": sum(r.get("unfinished_uploads_after_resume", r["unfinished_uploads_after"])
                                       for r in results),
        "attacks_missed": sum(bool(r.get("attack_missed")) for r in results),
    }
    if args.attack == "kill9":
        summary["ray_processes_after_5s"] = sum(r.get("ray_processes_after_5s", 0) for r in results)
        summary["slowest_ray_process_gone_s"] = max((r.get("last_ray_process_gone_after_s", 0) for r in results), default=0)
    print(json.dumps({"summary": summary}), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "trials": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
