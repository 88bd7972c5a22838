"""`python -m empo_operator`: run the operator with the settings from the environment (settings.py)."""

from __future__ import annotations

import asyncio
import os
import sys

import kopf

from empo_api.env_values import EnvValueError

from . import metrics
from .settings import from_env

# Where the metrics and liveness servers listen; 0.0.0.0 so the kubelet and Prometheus reach them.
BIND_ADDRESS = os.environ.get("EMPO_BIND_ADDRESS", "0.0.0.0")


def main() -> int:
    try:
        settings = from_env()
    except EnvValueError as exc:
        print(f"empo-operator: {exc}", file=sys.stderr)
        return 2
    kopf.configure(verbose=os.environ.get("EMPO_DEBUG") == "1",
                   log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL)
    from . import handlers  # noqa: F401  (registers the handlers)

    metrics.serve(settings.metrics_port, BIND_ADDRESS)
    liveness = f"http://{BIND_ADDRESS}:{settings.health_port}/healthz" if settings.health_port else None
    memo = kopf.Memo(settings=settings)
    asyncio.run(kopf.operator(
        standalone=settings.standalone,
        peering_name=settings.peering or None,
        clusterwide=settings.clusterwide,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
        memo=memo,
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
