"""The operator under a burst of EmpoRuns, on the real control plane (default) or the KMock emulator.

    python benchmarks/bench_operator.py                          # 1,000 runs in 100 namespaces, real cluster
    python benchmarks/bench_operator.py --runs 100 --namespaces 10
    python benchmarks/bench_operator.py --rate 10                # a steady 10 runs/s instead of one burst
    python benchmarks/bench_operator.py --target emulator --runs 200

Real cluster (`--target cluster`): etcd, kube-apiserver, kube-controller-manager and the KubeRay
operator built by tools/k8s/build.sh (tests/plugins/control_plane.py), the chart installed with
helm, and `python -m empo_operator` running as the chart's ServiceAccount under real RBAC. The API
server writes an audit log (level Metadata), which is the source of every figure: per run, the
time from the EmpoRun's create to its RayJob's create (both stamped by the API server), and the
requests the operator's identity made. Then, with every run live: the requests and status writes
per run per minute over a steady window (`--steady` seconds, the chart's 30 s resync running), and
an operator restart: its requests, the time until it has resumed every run, and that no child was
created twice. The operator's peak RSS is its VmHWM. Everything shares the machine's cores (KubeRay
creates a RayCluster and pods per RayJob meanwhile), so latencies are an upper bound.

Emulator (`--target emulator`): the same figures from the emulator's own request counts.

Writes benchmarks/results/operator-cluster.json (or operator.json for the emulator).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for the emulator and operator launchers the tests use

from empo_operator.builders import rayjob_name  # noqa: E402
from tests.integration.operator.conftest import Api, OperatorProcess  # noqa: E402
from tests.plugins.kmock_server import start_emulator, wait_for  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "operator.json"
CLUSTER_RESULTS = REPO / "benchmarks" / "results" / "operator-cluster.json"
NAMESPACE = "bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _handler_runs(metrics: str, handler: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(f'empo_operator_reconciles_total{{handler="{handler}"}}'):
            return float(line.split()[-1])
    return 0.0


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def emulator_main(args: argparse.Namespace) -> int:
    template = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        emulator = start_emulator(Path(tmp))
        op = OperatorProcess(emulator, NAMESPACE, Path(tmp) / "operator.log", EMPO_RESYNC_SECONDS="30")
        try:
            op.start()
            api = Api(emulator, NAMESPACE)
            before = emulator.request_counts()
            names = [f"bench-{i:04d}" for i in range(args.runs)]

            def create(name: str) -> None:
                doc = copy.deepcopy(template)
                doc["metadata"]["name"] = name
                doc["spec"]["storage"]["uri"] = "s3://empo-runs/bench"  # the operator refuses a pod-local path
                api.create_run(doc)

            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(create, names))
            def rayjobs_created() -> int:  # cheap: no object copies while the emulator is busy
                return emulator.call(lambda: sum(k[0] == "rayjobs" for k in emulator.handler.created_at))

            wait_for(lambda: rayjobs_created() >= args.runs, timeout=600, interval=0.5, what="every RayJob")
            all_rayjobs = time.monotonic() - started

            def initializing() -> int:
                return sum(res.plural == "emporuns" and not obj.deleted
                           and (obj.raw.get("status") or {}).get("phase") == "Initializing"
                           for (res, _, _), obj in list(emulator.handler.objects.items()))

            wait_for(lambda: emulator.call(initializing) >= args.runs, timeout=600, interval=0.5,
                     what="every run Initializing")
            settled = time.monotonic() - started
            created_at = emulator.call(lambda: dict(emulator.handler.created_at))
            uids = {n: r["metadata"]["uid"] for n, r in emulator.objects("emporuns", NAMESPACE).items()}
            latencies = [created_at[("rayjobs", NAMESPACE, rayjob_name(n, uids[n], 0))]
                         - created_at[("emporuns", NAMESPACE, n)] for n in names]
            counts = emulator.request_counts() - before
            counts[("CREATE", "emporuns")] -= args.runs  # the benchmark's own requests
            operator_requests = sum(counts.values())
            rss = peak_rss_mib(op.proc.pid)

            # Steady state: every run live, nothing changes; the resync runs every 30 s. The window
            # opens once the operator has worked off its backlog (5 s without a request).
            def quiet() -> bool:
                first = sum(emulator.request_counts().values())
                time.sleep(5)
                return sum(emulator.request_counts().values()) == first

            wait_for(quiet, timeout=300, interval=0, what="the operator idle")
            before_steady = emulator.request_counts()
            time.sleep(args.steady)
            steady = emulator.request_counts() - before_steady
            per_run_minute = 60 / args.steady / args.runs
            steady_requests = sum(steady.values()) * per_run_minute
            status_writes = steady[("UPDATE", "emporuns")] * per_run_minute

            # An operator restart with every run live.
            op.stop()
            before_restart = emulator.request_counts()
            restarted_at = time.monotonic()
            op = OperatorProcess(emulator, NAMESPACE, Path(tmp) / "operator2.log", EMPO_RESYNC_SECONDS="30")
            op.start()
            wait_for(lambda: _handler_runs(op.metrics(), "reconcile_run") >= args.runs, timeout=600, interval=0.5,
                     what="every run resumed")
            restart_seconds = time.monotonic() - restarted_at
            restart_requests = sum((emulator.request_counts() - before_restart).values())
            duplicates = len(emulator.objects("rayjobs", NAMESPACE)) - args.runs
        finally:
            op.stop()
            emulator._stop()
            if os.environ.get("BENCH_KEEP_LOG"):
                print((Path(tmp) / "operator.log").read_text()[-20000:], file=sys.stderr)

    result = {
        "benchmark": "operator",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m_at_end": round(os.getloadavg()[0], 1)},  # a shared machine: context
        "runs": args.runs,
        "create_to_rayjob_seconds": {"p50": round(percentile(latencies, 50), 3), "p99": round(percentile(latencies, 99), 3),
                                     "mean": round(statistics.mean(latencies), 3), "max": round(max(latencies), 3)},
        "all_rayjobs_seconds": round(all_rayjobs, 2),
        "all_initializing_seconds": round(settled, 2),
        "operator_peak_rss_mib": round(rss, 1),
        "api_requests_per_run": round(operator_requests / args.runs, 2),
        "api_requests_by_kind": {f"{a} {p}": round(n / args.runs, 2)
                                 for (a, p), n in sorted(counts.items()) if n > 0},
        "steady_window_seconds": args.steady,
        "steady_api_requests_per_run_per_minute": round(steady_requests, 3),
        "steady_status_writes_per_run_per_minute": round(status_writes, 3),
        "steady_requests_by_kind_per_run_per_minute": {f"{a} {p}": round(n * per_run_minute, 3)
                                                       for (a, p), n in sorted(steady.items()) if n > 0},
        "restart_seconds_to_resume_every_run": round(restart_seconds, 2),
        "restart_api_requests_per_run": round(restart_requests / args.runs, 2),
        "restart_duplicate_rayjobs": duplicates,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    lat = result["create_to_rayjob_seconds"]
    print(f"{args.runs} EmpoRuns created at once ({args.clients} clients)")
    print(f"  create -> RayJob created   p50 {lat['p50']:.3f}s  p99 {lat['p99']:.3f}s  max {lat['max']:.3f}s")
    print(f"  all RayJobs after {result['all_rayjobs_seconds']}s, all Initializing after {result['all_initializing_seconds']}s")
    print(f"  operator peak RSS          {result['operator_peak_rss_mib']} MiB")
    print(f"  API requests per run       {result['api_requests_per_run']}")
    for kind, n in result["api_requests_by_kind"].items():
        print(f"    {kind:<28} {n}")
    print(f"  steady: {result['steady_api_requests_per_run_per_minute']} API requests and "
          f"{result['steady_status_writes_per_run_per_minute']} status writes per run per minute")
    print(f"  operator restart: every run resumed after {result['restart_seconds_to_resume_every_run']}s, "
          f"{result['restart_api_requests_per_run']} requests per run, {duplicates} duplicate RayJobs")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("cluster", "emulator"), default="cluster")
    parser.add_argument("--runs", type=int, default=None, help="EmpoRuns (default: 1000 on a cluster, 200 emulated)")
    parser.add_argument("--namespaces", type=int, default=100, help="namespaces the runs spread over (cluster)")
    parser.add_argument("--clients", type=int, default=16, help="parallel creating clients")
    parser.add_argument("--rate", type=float, default=0, help="runs created per second (cluster; default: all at once)")
    parser.add_argument("--steady", type=float, default=120, help="seconds of the steady-state window")
    args = parser.parse_args()
    if args.target == "emulator":
        args.runs = args.runs or 200
        return emulator_main(args)
    from benchmarks.operator_cluster import cluster_main

    args.runs = args.runs or 1000
    return cluster_main(args)


if __name__ == "__main__":
    sys.exit(main())
