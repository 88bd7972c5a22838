"""The NetworkPolicy of a run's Ray cluster (pure): who may open connections to its pods, and where
its pods may open connections to.

Ray's GCS, raylets, object managers and workers listen on every interface of their pods, and a
Ray cluster that anyone in the cluster network can reach runs anyone's code. Token auth
(authOptions on the RayCluster) guards Ray's dashboard and RPC; this policy also closes the ports
Ray does not authenticate (NCCL, gloo, the object manager). Pods are selected by the run's label
(empo.dev/run=<run>), never by name, so every attempt's pods are covered whatever maxRestarts says.

Ingress to the run's pods is allowed from:
- the run's own pods (Ray's internal traffic, torch.distributed/NCCL between learners); KubeRay's
  submitter pods (K8sJobMode: `ray job submit` to the head's dashboard port) carry the run's labels
  (rayjob._submitter_template), so every attempt's submitter is one of them;
- the KubeRay operator's pods in KubeRay's own namespace (selected by the namespace's
  kubernetes.io/metadata.name label, which the API server sets and no tenant can forge), on the
  dashboard port only: it polls the job's status there;
- the address blocks of Settings.dashboard_cidrs on the dashboard port (the API servers, when
  KubeRay runs with --use-kubernetes-proxy and reaches the dashboard through them);
- anyone, on the trainer's read-only metrics port (Prometheus scrapes it).

Egress from the run's pods, when Settings.restrict_egress (the default), is allowed to:
- the run's own pods; DNS (53, UDP and TCP);
- the API server (Settings.api_server_ports, within Settings.api_server_cidrs when given): the
  driver reports progress to its EmpoRun's status;
- the S3 endpoint's port (within the endpoint's address when it is an IP); 443 for AWS S3;
- what the spec reads or reports to: the Hugging Face Hub (443) for a hub model, the MLflow server's
  port, W&B online (443);
- Settings.extra_egress (proxies, registries a run's code reaches on purpose).
NetworkPolicy selects peers by address and port, not by DNS name: an allowed port is open to every
address unless the spec or the settings name the address.

The API server's own paths into a pod (exec, logs, port-forward) go through the kubelet and are not
affected. The policy needs a CNI that enforces NetworkPolicy (Calico, Cilium, kube-network-policies);
on one that does not, it is silently ignored.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from empo_api.models import EmpoRun, WandbMode
from empo_api.uri import Uri

from .builders import DASHBOARD_PORT, LABEL_RUN, NAME_MAX, TRAINING_METRICS_PORT, fit_name, labels
from .settings import Settings

KUBERAY_OPERATOR_LABELS = {"app.kubernetes.io/name": "kuberay-operator"}  # the KubeRay chart's pod labels
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace
DNS_PORT = 53
HTTPS_PORT = 443


def network_policy_name(run_name: str) -> str:
    return fit_name(run_name, "-ray", NAME_MAX)


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def _cidr_block(cidr: str) -> dict[str, Any]:
    return {"ipBlock": {"cidr": cidr}}


def _endpoint(url: str) -> tuple[int, list[dict[str, Any]]]:
    """(port, peers) of an http(s) endpoint: its address when it is an IP, else any address."""
    parts = urlsplit(url)
    port = parts.port or (HTTPS_PORT if parts.scheme == "https" else 80)
    try:
        ip = ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        return port, []
    return port, [_cidr_block(f"{ip}/{ip.max_prefixlen}")]


def _from_hub(source: str) -> bool:
    uri = Uri.parse(source)
    return uri.scheme == "hf" or (uri.scheme == "local" and not source.startswith(("/", ".")))


def _own_pods(run: EmpoRun) -> dict[str, Any]:
    """Every pod of the run, whatever the attempt: selected by the run's label."""
    return {"podSelector": {"matchLabels": {LABEL_RUN: run.name}}}


def _egress(run: EmpoRun, settings: Settings) -> list[dict[str, Any]]:
    spec = run.spec
    own = _own_pods(run)
    rules: list[dict[str, Any]] = [
        {"to": [own]},
        {"ports": [{"protocol": "UDP", "port": DNS_PORT}, _tcp(DNS_PORT)]},
        {"to": [_cidr_block(c) for c in settings.api_server_cidrs],
         "ports": [_tcp(p) for p in settings.api_server_ports]},
    ]
    if spec.storage.endpoint:
        port, peers = _endpoint(spec.storage.endpoint)
        rules.append({"to": peers, "ports": [_tcp(port)]})
    else:  # AWS S3
        rules.append({"ports": [_tcp(HTTPS_PORT)]})
    if _from_hub(spec.model.source):
        rules.append({"ports": [_tcp(HTTPS_PORT)]})
    mlflow = spec.tracking.mlflow
    if mlflow is not None and mlflow.tracking_uri.startswith(("http://", "https://")):
        port, peers = _endpoint(mlflow.tracking_uri)
        rules.append({"to": peers, "ports": [_tcp(port)]})
    if spec.tracking.wandb is not None and spec.tracking.wandb.mode == WandbMode.online:
        rules.append({"ports": [_tcp(HTTPS_PORT)]})
    rules.extend(settings.extra_egress)
    unique: list[dict[str, Any]] = []
    for rule in rules:
        rule = {k: v for k, v in rule.items() if v}  # an empty `to` would read as "to nobody" to a reader
        if rule not in unique:
            unique.append(rule)
    return unique


def build_network_policy(run: EmpoRun, settings: Settings) -> dict[str, Any]:
    """The run's NetworkPolicy; the same for every attempt (pods are selected by the run's label).
    `run` carries its effective spec (defaults.defaulted): the S3 endpoint is the one it was accepted with."""
    own = _own_pods(run)
    kuberay = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: settings.kuberay_namespace}},
               "podSelector": {"matchLabels": dict(KUBERAY_OPERATOR_LABELS)}}
    policy_spec: dict[str, Any] = {
        **_own_pods(run),  # a dict of its own: a shared one would print as a YAML alias in `empo render`
        "policyTypes": ["Ingress", "Egress"] if settings.restrict_egress else ["Ingress"],
        "ingress": [
            {"from": [own]},
            {"from": [kuberay, *(_cidr_block(c) for c in settings.dashboard_cidrs)],
             "ports": [_tcp(DASHBOARD_PORT)]},
            {"ports": [_tcp(TRAINING_METRICS_PORT)]},
        ],
    }
    if settings.restrict_egress:
        policy_spec["egress"] = _egress(run, settings)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": network_policy_name(run.name), "namespace": run.namespace,
                     "labels": labels(run, "network-policy")},
        "spec": policy_spec,
    }
