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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

DEFAULT_TRAINER_IMAGE = "ghcr.io/empo-dev/empo-trainer:0.1.0"
LOG_FORMATS = ("plain", "json")


class SettingsError(ValueError):
    """A setting the operator cannot start with; the message names the variable."""


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
        raise SettingsError(f"{name}={raw!r}: expected a port number (0 disables)") from None
    if not 0 <= value <= 65535:
        raise SettingsError(f"{name}={raw!r}: expected a port number between 0 and 65535")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise SettingsError(f"{name}={raw!r}: must not be negative")
    return value


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    log_format = env.get("EMPO_LOG_FORMAT", "").strip() or "plain"
    if log_format not in LOG_FORMATS:
        raise SettingsError(f"EMPO_LOG_FORMAT={log_format!r}: allowed are {', '.join(LOG_FORMATS)}")
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
        restart_backoff_seconds=_float(env, "EMPO_RESTART_BACKOFF_SECONDS", 10.0),
        restart_backoff_max_seconds=_float(env, "EMPO_RESTART_BACKOFF_MAX_SECONDS", 600.0),
        resync_seconds=_positive(env, "EMPO_RESYNC_SECONDS", 30.0),
        api_threads=int(_positive(env, "EMPO_API_THREADS", 32)),
    )


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if value <= 0:
        raise SettingsError(f"{name}={env.get(name)!r}: must be above 0")
    return value
