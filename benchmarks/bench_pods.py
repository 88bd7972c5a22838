"""From `kubectl apply` to Succeeded on the test node: where the time goes.

Starts the node cluster of the end-to-end tests (tests/plugins/node.py: control plane, containerd,
kubelet, scheduler, kube-proxy, CoreDNS), a SeaweedFS the pods reach, installs the chart from the
operator image built here, applies the tests' small EmpoRun (tests/e2e/flow.py) and splits its life
by the timestamps the API server and the trainer recorded:

  scheduling   apply -> the head pod scheduled
  pod start    scheduled -> the head container started (sandbox, network, container; images local)
  ray start    container started -> the head Ready (KubeRay's probes: raylet and GCS healthy)
  submitter    head Ready -> KubeRay's submitter container started (KubeRay sees the cluster ready,
               creates the Job; the Job controller, scheduler and kubelet start its pod)
  to 1st step  submitter started -> the first step reported (`ray job submit`, the driver, model
               staged and loaded, the learner actor started, the first rollout and update)
  steps        first -> last step reported (per step)
  finish       last step -> Succeeded (final checkpoint, evaluation, report, KubeRay's job status)

Prints the figures and writes benchmarks/results/pods.json. Usage: bench_pods.py [--runs N] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.flow import Watch, _ts, apply_run, install_operator  # noqa: E402
from tests.plugins.node import NODE_IP, build_images, start_node_cluster  # noqa: E402
from tests.plugins.seaweedfs import start_seaweedfs  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "pods.json"


def one_run(nc, s3, index: int, steps: int) -> dict[str, float]:
    ns = nc.cp.create_namespace(f"bench{index}")
    bucket = s3.new_bucket("bench")
    applied = time.time()
    apply_run(nc, s3, ns, bucket, steps=steps)
    watch = Watch(nc, ns)
    final = watch.until(lambda s: s.get("phase") in ("Succeeded", "Failed"), 1800, "the run to end")
    if final["phase"] != "Succeeded":
        raise SystemExit(f"run {index} failed: {watch.describe()}")
    head, submitter = watch.pod_times("head"), watch.pod_times("submitter")
    step_times = {}
    for seen, status in watch.statuses:
        step = (status.get("progress") or {}).get("step")
        if step and step not in step_times:
            step_times[step] = _ts(status["progress"].get("updatedAt")) or seen
    first, last = step_times[min(step_times)], step_times[max(step_times)]
    succeeded = _ts(final.get("completionTime")) or watch.first_time(lambda s: s.get("phase") == "Succeeded")
    nc.cp.kubectl("delete", "namespace", ns, "--wait=false")
    return {
        "scheduling_s": head["scheduled"] - applied,
        "pod_start_s": head["started"] - head["scheduled"],
        "ray_start_s": head["ready"] - head["started"],
        "submitter_s": submitter["started"] - head["ready"],
        "to_first_step_s": first - submitter["started"],
        "per_step_s": (last - first) / max(1, len(step_times) - 1),
        "finish_s": succeeded - last,
        "apply_to_first_step_s": first - applied,
        "apply_to_succeeded_s": succeeded - applied,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="runs one after the other on the same node")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    images = build_images()
    built = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="empo-bench-node-") as tmp:
        node_started = time.perf_counter()
        with start_node_cluster(Path(tmp), images=images) as nc, \
                start_seaweedfs(Path(tmp) / "weed", ip=NODE_IP) as s3:
            node_up = time.perf_counter() - node_started
            install_started = time.perf_counter()
            install_operator(nc, s3)
            installed = time.perf_counter() - install_started
            runs = [one_run(nc, s3, i, args.steps) for i in range(args.runs)]
    keys = list(runs[0])
    result = {"images_s": round(built, 1), "node_up_s": round(node_up, 1), "helm_install_s": round(installed, 1),
              "steps": args.steps, "runs": runs,
              "median": {k: round(statistics.median(r[k] for r in runs), 1) for k in keys}}
    print(f"images (cached or built) {built:.0f} s, node up {node_up:.0f} s (incl. image import), "
          f"helm install until the operator is Ready {installed:.0f} s")
    print(f"{'phase':<24}" + "".join(f"run {i:<6}" for i in range(len(runs))) + "median")
    for k in keys:
        print(f"{k:<24}" + "".join(f"{r[k]:<10.1f}" for r in runs) + f"{result['median'][k]:.1f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
