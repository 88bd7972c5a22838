"""The NetworkPolicy of a run's Ray cluster (pure): who may open connections to its pods.

Ray's GCS, raylets, object managers and workers listen on every interface of their pods, and a
Ray cluster that anyone in the cluster network can reach runs anyone's code. Token auth
(authOptions on the RayCluster) guards Ray's own RPC; this policy also closes the ports Ray does
not authenticate. Ingress to the run's pods (label empo.dev/run=<run>) is allowed from:
- the run's own pods (Ray's internal traffic, torch.distributed/NCCL between learners);
  KubeRay's submitter pods (K8sJobMode: `ray job submit` to the head's dashboard port) carry the
  run's labels (builders._submitter_template), so every attempt's submitter is one of them;
- the KubeRay operator, on the dashboard port only (it polls the job's status there);
- anyone, on the trainer's read-only metrics port (Prometheus scrapes it).
Egress is not restricted (the trainer reads S3 and reports to the API server). The API server's
own paths into a pod (exec, logs, port-forward) go through the kubelet and are not affected.
"""

from __future__ import annotations

from typing import Any

from empo_api.models import EmpoRun

from .builders import DASHBOARD_PORT, LABEL_RUN, NAME_MAX, TRAINING_METRICS_PORT, fit_name, labels

KUBERAY_OPERATOR_LABELS = {"app.kubernetes.io/name": "kuberay-operator"}  # the KubeRay chart's pod labels


def network_policy_name(run_name: str) -> str:
    return fit_name(run_name, "-ray", NAME_MAX)


def build_network_policy(run: EmpoRun) -> dict[str, Any]:
    """The run's NetworkPolicy; the same for every attempt (pods are selected by the run's label)."""
    own = {"podSelector": {"matchLabels": {LABEL_RUN: run.name}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": network_policy_name(run.name), "namespace": run.namespace,
                     "labels": labels(run, "network-policy")},
        "spec": {
            "podSelector": {"matchLabels": {LABEL_RUN: run.name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [own]},
                {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": dict(KUBERAY_OPERATOR_LABELS)}}],
                 "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}]},
                {"ports": [{"protocol": "TCP", "port": TRAINING_METRICS_PORT}]},
            ],
        },
    }
