"""The operator benchmark on the real control plane; run it through benchmarks/bench_operator.py.

Every figure comes from the API server's audit log, so the operator is measured as the cluster sees
it: one line per request, stamped by the server, with the identity that made it.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import copy
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.bench_operator import CLUSTER_RESULTS, REPO, _handler_runs, peak_rss_mib, percentile
from empo_operator.builders import rayjob_name
from tests.integration.cluster.conftest import ChartOperator, helm_install
from tests.plugins.control_plane import start_control_plane
from tests.waiting import wait_for

# A GPU run as a platform team writes it: the server fills in every default.
RUN = {"apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun",
       "spec": {"model": {"source": "Qwen/Qwen2.5-Math-1.5B"}, "dataset": {"uri": "s3://data/math.jsonl"}}}
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["*"]
- level: Metadata
"""


@dataclass
class Request:
    at: float  # the server's stageTimestamp (ResponseComplete), seconds since the epoch
    user: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int


class AuditLog:
    """The audit log read incrementally: each call to `new()` parses the lines written since."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.requests = path, 0, []

    def new(self) -> list[Request]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.offset += end
        fresh = []
        for line in data[:end].splitlines():
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete":
                continue
            ref = event.get("objectRef") or {}
            fresh.append(Request(
                at=datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00")).timestamp(),
                user=event["user"]["username"], verb=event["verb"], resource=ref.get("resource", ""),
                subresource=ref.get("subresource", ""), namespace=ref.get("namespace", ""),
                name=ref.get("name", ""), code=(event.get("responseStatus") or {}).get("code", 0)))
        self.requests.extend(fresh)
        return fresh


def by_kind(requests: list[Request], scale: float) -> dict[str, float]:
    counts = collections.Counter(f"{r.verb} {r.resource}{'/' + r.subresource if r.subresource else ''}"
                                 for r in requests)
    return {k: round(n * scale, 3) for k, n in sorted(counts.items())}


def is_status_write(r: Request) -> bool:
    return r.resource == "emporuns" and r.verb in ("patch", "update")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reconciles(op: ChartOperator) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as r:
        return _handler_runs(r.read().decode(), "reconcile_run")


def cluster_main(args: argparse.Namespace) -> int:
    runs, spaces = args.runs, min(args.namespaces, args.runs)
    with tempfile.TemporaryDirectory(prefix="empo-bench-", dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        (work / "audit-policy.yaml").write_text(AUDIT_POLICY)
        audit_path = work / "audit.log"
        audit_args = (f"--audit-policy-file={work / 'audit-policy.yaml'}", f"--audit-log-path={audit_path}",
                      "--audit-log-format=json", "--audit-log-maxsize=0")
        with start_control_plane(work / "cluster", apiserver_args=audit_args) as cp:
            release = helm_install(cp, "empo", "empo-system", "--set", "storage.defaultUri=s3://empo-runs/bench")
            operator_user = f"system:serviceaccount:{release.namespace}:{release.service_account}"
            audit = AuditLog(audit_path)
            op = ChartOperator(cp, release, work)
            try:
                op.start()
                namespaces = [f"bench-{i:03d}" for i in range(spaces)]
                placement = [(namespaces[i % spaces], f"run-{i:04d}") for i in range(runs)]
                local = threading.local()

                def custom():  # one client per thread: urllib3 pools are per client
                    if not hasattr(local, "api"):
                        from kubernetes import client
                        local.api = (client.CustomObjectsApi(cp.client()), client.CoreV1Api(cp.client()))
                    return local.api

                def make_namespace(name: str) -> None:
                    custom()[1].create_namespace({"metadata": {"name": name}})

                def create(where: tuple[int, tuple[str, str]]) -> None:
                    i, (ns, name) = where
                    if args.rate:  # a steady arrival rate instead of one burst
                        time.sleep(max(0.0, started + i / args.rate - time.time()))
                    doc = copy.deepcopy(RUN)
                    doc["metadata"] = {"name": name, "namespace": ns}
                    custom()[0].create_namespaced_custom_object("empo.dev", "v1alpha1", ns, "emporuns", doc)

                with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                    list(pool.map(make_namespace, namespaces))
                    cpu_before = {c.name: cpu_seconds(c.proc.pid) for c in cp.components}
                    cpu_before["empo-operator"] = cpu_seconds(op.proc.pid)
                    started = time.time()
                    list(pool.map(create, enumerate(placement)))
                created_s = time.time() - started

                def operator_requests(since: float, until: float = float("inf")) -> list[Request]:
                    audit.new()
                    return [r for r in audit.requests if r.user == operator_user and since <= r.at <= until]

                def rayjobs_created() -> int:
                    return sum(r.verb == "create" and r.resource == "rayjobs" and r.code == 201
                               for r in operator_requests(started))

                wait_for(lambda: rayjobs_created() >= runs, timeout=1800, interval=1, what="every RayJob")
                cpu_burst = {c.name: cpu_seconds(c.proc.pid) - cpu_before[c.name] for c in cp.components}
                cpu_burst["empo-operator"] = cpu_seconds(op.proc.pid) - cpu_before["empo-operator"]
                all_rayjobs = max(r.at for r in operator_requests(started)
                                  if r.verb == "create" and r.resource == "rayjobs") - started

                def quiet(seconds: float = 10) -> bool:
                    """No request from the operator in the last `seconds` (the audit log's clock)."""
                    before = len(operator_requests(started))
                    time.sleep(seconds)
                    return len(operator_requests(started)) == before

                wait_for(quiet, timeout=1800, interval=0, what="the operator idle after the burst")
                settled = time.time() - started
                creates = {(r.namespace, r.name): r.at for r in audit.requests
                           if r.user != operator_user and r.verb == "create" and r.resource == "emporuns"}
                rayjobs = {(r.namespace, r.name): r.at for r in operator_requests(started)
                           if r.verb == "create" and r.resource == "rayjobs" and r.code == 201}
                listed = custom()[0].list_cluster_custom_object("empo.dev", "v1alpha1", "emporuns")["items"]
                uids = {(o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"]["uid"] for o in listed}
                phases = collections.Counter((o.get("status") or {}).get("phase", "") for o in listed)
                latencies = [rayjobs[(ns, rayjob_name(name, uids[(ns, name)], 0))] - creates[(ns, name)]
                             for ns, name in placement]
                burst = operator_requests(started)
                rss = peak_rss_mib(op.proc.pid)

                # Steady state: every run live, nothing changes but KubeRay's own status updates.
                window_start = time.time()
                time.sleep(args.steady)
                window_end = time.time()
                steady = operator_requests(window_start, window_end)
                per_run_minute = 60 / args.steady / runs

                # An operator restart with every run live.
                op.stop()
                restarted = time.time()
                (work / "restart").mkdir()  # its own kubeconfig and log beside the first one's
                op = ChartOperator(cp, release, work / "restart")
                op.start()
                wait_for(lambda: reconciles(op) >= runs, timeout=1800, interval=1, what="every run resumed")
                resumed = time.time() - restarted
                wait_for(quiet, timeout=1800, interval=0, what="the operator idle after its restart")
                after_restart = operator_requests(restarted)
                rss = max(rss, peak_rss_mib(op.proc.pid))
                all_rayjobs_now = custom()[0].list_cluster_custom_object("ray.io", "v1", "rayjobs")["items"]
                per_run_children = collections.Counter(
                    (j["metadata"]["namespace"], (j["metadata"].get("ownerReferences") or [{}])[0].get("uid"))
                    for j in all_rayjobs_now)
            finally:
                op.stop()
                if os.environ.get("BENCH_KEEP_LOG"):
                    print(op.log()[-20000:])
            audit_lines = sum(1 for _ in open(audit_path, "rb"))

    result = {
        "benchmark": "operator", "target": "real control plane (kube-apiserver v1.37.2, etcd v3.7.3, KubeRay v1.5.0)",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1m_at_end": round(os.getloadavg()[0], 1)},  # a shared machine: context
        "runs": runs, "namespaces": spaces, "clients": args.clients,
        "arrival": f"{args.rate} runs/s" if args.rate else "one burst",
        "create_seconds": round(created_s, 2),
        "create_to_rayjob_seconds": {"p50": round(percentile(latencies, 50), 3), "p99": round(percentile(latencies, 99), 3),
                                     "mean": round(statistics.mean(latencies), 3), "max": round(max(latencies), 3)},
        "all_rayjobs_seconds": round(all_rayjobs, 2),
        "operator_idle_after_seconds": round(settled, 2),
        "phases_after_burst": dict(phases),
        "operator_peak_rss_mib": round(rss, 1),
        # Until the last RayJob: who used the machine's cores (KubeRay's work is a real cluster's too).
        "cpu_seconds_until_every_rayjob": {k: round(v, 1) for k, v in cpu_burst.items()},
        "operator_cpu_ms_per_run": round(1000 * cpu_burst["empo-operator"] / runs, 1),
        "burst_api_requests_per_run": round(len(burst) / runs, 2),
        "burst_requests_by_kind_per_run": by_kind(burst, 1 / runs),
        "burst_status_writes_per_run": round(sum(map(is_status_write, burst)) / runs, 2),
        "steady_window_seconds": args.steady,
        "steady_api_requests_per_run_per_minute": round(len(steady) * per_run_minute, 4),
        "steady_status_writes_per_run_per_minute": round(sum(map(is_status_write, steady)) * per_run_minute, 4),
        "steady_requests_by_kind_per_run_per_minute": by_kind(steady, per_run_minute),
        "restart_seconds_to_resume_every_run": round(resumed, 2),
        "restart_api_requests_per_run": round(len(after_restart) / runs, 2),
        "restart_requests_by_kind_per_run": by_kind(after_restart, 1 / runs),
        "rayjobs_after_restart": len(all_rayjobs_now),
        "runs_with_more_than_one_rayjob": sum(n > 1 for n in per_run_children.values()),
        "audit_log_lines": audit_lines,
    }
    CLUSTER_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    CLUSTER_RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    lat = result["create_to_rayjob_seconds"]
    print(f"{runs} EmpoRuns in {spaces} namespaces ({result['arrival']}), created by {args.clients} clients "
          f"in {created_s:.1f}s")
    print(f"  create -> RayJob created   p50 {lat['p50']:.3f}s  p99 {lat['p99']:.3f}s  max {lat['max']:.3f}s")
    print(f"  all RayJobs after {result['all_rayjobs_seconds']}s; operator idle after {result['operator_idle_after_seconds']}s; "
          f"phases {result['phases_after_burst']}")
    print(f"  operator peak RSS          {result['operator_peak_rss_mib']} MiB")
    print(f"  CPU seconds until every RayJob: {result['cpu_seconds_until_every_rayjob']} "
          f"(operator {result['operator_cpu_ms_per_run']} ms per run)")
    print(f"  burst: {result['burst_api_requests_per_run']} API requests per run, "
          f"{result['burst_status_writes_per_run']} status writes per run")
    for kind, n in result["burst_requests_by_kind_per_run"].items():
        print(f"    {kind:<32} {n}")
    print(f"  steady ({args.steady:.0f}s): {result['steady_api_requests_per_run_per_minute']} API requests and "
          f"{result['steady_status_writes_per_run_per_minute']} status writes per run per minute")
    print(f"  operator restart: every run resumed after {resumed:.1f}s, {result['restart_api_requests_per_run']} requests "
          f"per run, {result['rayjobs_after_restart']} RayJobs, {result['runs_with_more_than_one_rayjob']} runs with two")
    print(f"wrote {CLUSTER_RESULTS.relative_to(REPO)}")
    return 0
