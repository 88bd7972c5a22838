"""Operator settings, read once from environment variables (the Helm chart sets these names).

| variable                  | default                           | meaning                                                   |
|---------------------------|-----------------------------------|-----------------------------------------------------------|
| EMPO_NAMESPACES           | "" (cluster-wide)                 | comma list of namespaces to watch                         |
| EMPO_PEERING              | "" (standalone)                   | kopf peering name; set it when running >1 replica         |
| EMPO_TRAINER_IMAGE        | ghcr.io/empo-dev/empo-trainer:0.1.0 | image of head and workers when spec.ray.image is unset  |
| EMPO_DEFAULT_STORAGE_URI  | ""                                | used when a run leaves spec.storage.uri unset (s3://...)  |
| EMPO_S3_ENDPOINT          | ""                                | used when a run leaves spec.storage.endpoint unset        |
| EMPO_METRICS_PORT         | 8080                              | Prometheus metrics (/metrics); 0 disables                 |
| EMPO_HEALTH_PORT          | 8081                              | kopf liveness endpoint /healthz; 0 disables               |
| EMPO_LOG_FORMAT           | plain                             | plain or json                                             |
| EMPO_RESTART_BACKOFF_SECONDS | 10                             | first retry delay of a failed attempt; doubles each retry |
| EMPO_RESTART_BACKOFF_MAX_SECONDS | 600                        | cap of the retry delay                                    |
| EMPO_RESYNC_SECONDS       | 30                                | every live run is reconciled this often (repairs drift)   |
| EMPO_API_THREADS          | 32                                | threads making API calls (asyncio's default executor)     |
| EMPO_PRE_RUNNING_DEADLINE_SECONDS | 3600                      | a run's attempt that has not started running by then fails (spec.preRunningDeadlineSeconds overrides; not for runs in a Kueue queue); 0: none |
| EMPO_RUN_POD_SECURITY_CONTEXT | restricted (see below)        | JSON: the pod securityContext of every pod of a run       |
| EMPO_RUN_SECURITY_CONTEXT | restricted (see below)            | JSON: the securityContext of every container of a run     |
| EMPO_RUN_CACHE_VOLUME     | {} (an emptyDir)                  | JSON: the volume source of every Ray pod's cache (model, checkpoints): a persistentVolumeClaim, hostPath, ... |
| EMPO_KUBERAY_NAMESPACE    | kuberay-system                    | KubeRay's namespace: its pods may reach a run's dashboard |
| EMPO_DASHBOARD_CIDRS      | ""                                | comma list of CIDRs also admitted to a run's dashboard    |
| EMPO_RESTRICT_EGRESS      | true                              | the runs' NetworkPolicies limit egress too                |
| EMPO_API_SERVER_PORTS     | 443,6443                          | the API server's ports (after the Service's translation)  |
| EMPO_API_SERVER_CIDRS     | "" (any address)                  | comma list of CIDRs of the API servers                    |
| EMPO_EXTRA_EGRESS         | []                                | JSON list of NetworkPolicy egress rules added to each run |
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from typing import Mapping

from empo_api.env_values import EnvValueError, seconds

DEFAULT_TRAINER_IMAGE = "ghcr.io/empo-dev/empo-trainer:0.1.0"
# The restricted Pod Security Standard, which the trainer image (user 1000) meets; {} sets none.
RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
LOG_FORMATS = ("plain", "json")


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()
    peering: str = ""
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    default_storage_uri: str = ""
    s3_endpoint: str = ""
    metrics_port: int = 8080
    health_port: int = 8081
    log_format: str = "plain"
    restart_backoff_seconds: float = 10.0
    restart_backoff_max_seconds: float = 600.0
    resync_seconds: float = 30.0
    api_threads: int = 32
    pre_running_deadline_seconds: float = 3600.0
    run_pod_security_context: dict = field(default_factory=lambda: dict(RESTRICTED_POD))
    run_security_context: dict = field(default_factory=lambda: dict(RESTRICTED_CONTAINER))
    kuberay_namespace: str = "kuberay-system"
    dashboard_cidrs: tuple[str, ...] = ()
    restrict_egress: bool = True
    api_server_ports: tuple[int, ...] = (443, 6443)
    api_server_cidrs: tuple[str, ...] = ()
    extra_egress: tuple[dict, ...] = ()
    # The volume source of the Ray pods' cache (rayjob.CACHE_MOUNT); {}: an emptyDir on the node's
    # disk, which the pods' ephemeral-storage request then covers.
    run_cache_volume: dict = field(default_factory=dict)

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def standalone(self) -> bool:
        return not self.peering


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise EnvValueError(f"{name}={raw!r}: expected a port number (0 disables)") from None
    if not 0 <= value <= 65535:
        raise EnvValueError(f"{name}={raw!r}: expected a port number between 0 and 65535")
    return value


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    log_format = env.get("EMPO_LOG_FORMAT", "").strip() or "plain"
    if log_format not in LOG_FORMATS:
        raise EnvValueError(f"EMPO_LOG_FORMAT={log_format!r}: allowed are {', '.join(LOG_FORMATS)}")
    namespaces = tuple(n.strip() for n in env.get("EMPO_NAMESPACES", "").split(",") if n.strip())
    return Settings(
        namespaces=namespaces,
        peering=env.get("EMPO_PEERING", "").strip(),
        trainer_image=env.get("EMPO_TRAINER_IMAGE", "").strip() or DEFAULT_TRAINER_IMAGE,
        default_storage_uri=env.get("EMPO_DEFAULT_STORAGE_URI", "").strip(),
        s3_endpoint=env.get("EMPO_S3_ENDPOINT", "").strip(),
        metrics_port=_int(env, "EMPO_METRICS_PORT", 8080),
        health_port=_int(env, "EMPO_HEALTH_PORT", 8081),
        log_format=log_format,
        restart_backoff_seconds=seconds(env, "EMPO_RESTART_BACKOFF_SECONDS", 10.0),
        restart_backoff_max_seconds=seconds(env, "EMPO_RESTART_BACKOFF_MAX_SECONDS", 600.0),
        resync_seconds=_positive(env, "EMPO_RESYNC_SECONDS", 30.0),
        api_threads=int(_positive(env, "EMPO_API_THREADS", 32)),
        pre_running_deadline_seconds=seconds(env, "EMPO_PRE_RUNNING_DEADLINE_SECONDS", 3600.0),
        run_pod_security_context=_json_object(env, "EMPO_RUN_POD_SECURITY_CONTEXT", RESTRICTED_POD),
        run_security_context=_json_object(env, "EMPO_RUN_SECURITY_CONTEXT", RESTRICTED_CONTAINER),
        kuberay_namespace=env.get("EMPO_KUBERAY_NAMESPACE", "").strip() or "kuberay-system",
        dashboard_cidrs=_cidrs(env, "EMPO_DASHBOARD_CIDRS"),
        restrict_egress=_bool(env, "EMPO_RESTRICT_EGRESS", True),
        api_server_ports=_ports(env, "EMPO_API_SERVER_PORTS", (443, 6443)),
        api_server_cidrs=_cidrs(env, "EMPO_API_SERVER_CIDRS"),
        extra_egress=_egress_rules(env, "EMPO_EXTRA_EGRESS"),
        run_cache_volume=_volume_source(env, "EMPO_RUN_CACHE_VOLUME"),
    )


def _items(env: Mapping[str, str], name: str) -> list[str]:
    return [v.strip() for v in env.get(name, "").split(",") if v.strip()]


def _cidrs(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    out = []
    for item in _items(env, name):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise EnvValueError(f"{name}: {item!r} is not a CIDR (e.g. 10.0.0.0/16 or 192.0.2.10/32)") from None
    return tuple(out)


def _ports(env: Mapping[str, str], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    items = _items(env, name)
    if not items:
        return default
    if not all(i.isdigit() and 1 <= int(i) <= 65535 for i in items):
        raise EnvValueError(f"{name}={env.get(name)!r}: expected a comma list of ports (1-65535)")
    return tuple(int(i) for i in items)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise EnvValueError(f"{name}={env.get(name)!r}: expected true or false")
    return raw == "true"


def _json_object(env: Mapping[str, str], name: str, default: dict) -> dict:
    raw = env.get(name, "").strip()
    if not raw:
        return json.loads(json.dumps(default))
    try:
        value = json.loads(raw)
    except ValueError:
        raise EnvValueError(f"{name}: not JSON; expected an object such as {json.dumps(default)}") from None
    if not isinstance(value, dict):
        raise EnvValueError(f"{name}: expected a JSON object (a securityContext), got {type(value).__name__}")
    return value


VOLUME_SOURCES = ("emptyDir", "persistentVolumeClaim", "hostPath", "ephemeral", "nfs", "csi")


def _volume_source(env: Mapping[str, str], name: str) -> dict:
    value = _json_object(env, name, {})
    if value and (len(value) != 1 or next(iter(value)) not in VOLUME_SOURCES):
        raise EnvValueError(f"{name}: expected one volume source, one of {', '.join(VOLUME_SOURCES)} "
                            f"(e.g. {{\"persistentVolumeClaim\": {{\"claimName\": \"model-cache\"}}}}), got {sorted(value)}")
    return value


def _egress_rules(env: Mapping[str, str], name: str) -> tuple[dict, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return ()
    try:
        rules = json.loads(raw)
    except ValueError:
        raise EnvValueError(f"{name}: not JSON; expected a list of NetworkPolicy egress rules") from None
    if not isinstance(rules, list) or not all(isinstance(r, dict) and r.keys() <= {"to", "ports"} for r in rules):
        raise EnvValueError(f"{name}: expected a list of NetworkPolicy egress rules ({{to: [...], ports: [...]}})")
    return tuple(rules)


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = seconds(env, name, default)
    if value <= 0:
        raise EnvValueError(f"{name}={env.get(name)!r}: must be above 0")
    return value
