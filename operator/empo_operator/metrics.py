"""Prometheus metrics of the operator (served on EMPO_METRICS_PORT at /metrics)."""

from __future__ import annotations

import functools
import time
from typing import Any, Awaitable, Callable

from prometheus_client import Counter, Histogram, start_http_server

RECONCILES = Counter("empo_operator_reconciles_total", "Handler runs.", ["handler"])
ERRORS = Counter("empo_operator_errors_total", "Handler runs that raised.", ["handler"])
LATENCY = Histogram("empo_operator_reconcile_seconds", "Handler duration.", ["handler"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
RAYJOBS_CREATED = Counter("empo_operator_rayjobs_created_total", "RayJobs created (attempts).")
RESTARTS = Counter("empo_operator_restarts_total", "Failed attempts restarted.")


def serve(port: int, addr: str) -> None:
    if port:
        start_http_server(port, addr=addr)


def instrumented(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Count, time and count errors of an async kopf handler."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(**kwargs: Any) -> Any:
        RECONCILES.labels(name).inc()
        start = time.perf_counter()
        try:
            return await fn(**kwargs)
        except Exception:
            ERRORS.labels(name).inc()
            raise
        finally:
            LATENCY.labels(name).observe(time.perf_counter() - start)

    return wrapper
