"""Riding out a storage outage: every S3 request retries for a bounded window, then fails clearly.

botocore's standard retry mode handles blips (throttling, a dropped connection): `max_attempts`
tries with capped exponential backoff, about 3 s in all for connection errors and about 20 s for
throttling. A store that restarts, fails over or is partitioned away for half a minute outlasts
that, and one failed PUT of a metrics line or a checkpoint part used to end the run.

`OutageRetry` is a second handler on botocore's own `needs-retry` event, so it applies to every
request the client makes: our calls and the transfer manager's (each part of a multipart upload
waits the outage out and the upload continues where it was; nothing is uploaded twice). When
botocore's handler has given up on an error its standard conditions call retryable (connection
errors, timeouts, 5xx, throttling), this one keeps retrying the request with jittered backoff
(at most `BACKOFF_CAP_S` between tries) until `window_s` have passed since the request first
failed, logging progress at most every `LOG_EVERY_S`: "S3 endpoint ... unavailable ...; retrying
for up to 52 s more". After the window the error reaches the caller, who maps it to
StorageUnavailableError ("... unavailable for 120 s ...").

AbortMultipartUpload is left to botocore's retries alone: s3transfer sends it while a failed
upload is being cleaned up, and waiting a second window there would double the time to fail. An
upload whose abort did not get through is aborted at the next start (RunStorage.clean_leftovers).

The window comes from S3Options.outage_window_s, whose default is the EMPO_STORAGE_OUTAGE_SECONDS
environment variable (a local run's actors inherit it; on a cluster set it in spec.ray.env), else
DEFAULT_WINDOW_S.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from empo_api.env_values import seconds

log = logging.getLogger("empo_trainer.storage")

ENV = "EMPO_STORAGE_OUTAGE_SECONDS"
DEFAULT_WINDOW_S = 120.0
BACKOFF_CAP_S = 5.0
LOG_EVERY_S = 5.0
_SINCE = "empo_outage_since"  # key in botocore's per-request context: when this request first failed
_NOT_EXTENDED = {"AbortMultipartUpload"}


def default_window_s() -> float:
    """EMPO_STORAGE_OUTAGE_SECONDS if set (0 turns the window off), else DEFAULT_WINDOW_S."""
    return seconds(os.environ, ENV, DEFAULT_WINDOW_S)


class OutageRetry:
    """A `needs-retry.s3` handler that extends botocore's retries to a time window (see the module)."""

    def __init__(self, window_s: float, endpoint: str, clock=time.monotonic):
        from botocore.retries.standard import ExponentialBackoff, RetryEventAdapter, StandardRetryConditions

        self.window_s = window_s
        self.endpoint = endpoint
        self._clock = clock
        self._adapter = RetryEventAdapter()
        # botocore's own notion of "retryable" (transient, throttling, modeled), without its attempt cap
        self._conditions = StandardRetryConditions(max_attempts=2**31)
        self._backoff = ExponentialBackoff(max_backoff=BACKOFF_CAP_S)
        self._lock = threading.Lock()
        self._last_log = float("-inf")
        self.failures = 0  # retryable failures seen within a window (tests, benchmarks)

    def register(self, client) -> None:
        # Registered after botocore's handler: endpoint.py takes the first non-None answer, so
        # this one decides only when botocore's standard handler has declined to retry.
        client.meta.events.register("needs-retry.s3", self.needs_retry, unique_id="empo-outage-retry")

    def needs_retry(self, **kwargs) -> float | None:
        context = self._adapter.create_retry_context(**kwargs)
        if context.caught_exception is None and context.http_response is not None \
                and context.http_response.status_code < 500 and context.get_error_code() is None:
            return None  # the common case, an answer: nothing to do
        if not self._conditions.is_retryable(context):
            return None
        operation = getattr(context.operation_model, "name", "request")
        now = self._clock()
        since = context.request_context.setdefault(_SINCE, now)
        left = self.window_s - (now - since)
        if left <= 0 or operation in _NOT_EXTENDED:
            return None
        cause = type(context.caught_exception).__name__ if context.caught_exception is not None \
            else (context.get_error_code() or f"HTTP {context.http_response.status_code}")
        with self._lock:
            self.failures += 1
            if now - self._last_log >= LOG_EVERY_S:
                self._last_log = now
                log.warning("S3 endpoint %s unavailable (%s on %s); retrying for up to %.0f s more",
                            self.endpoint, cause, operation, left)
        return min(self._backoff.delay_amount(context), max(left, 0.0))


def s3_client(endpoint_url: str | None = None):
    """A plain boto3 S3 client (datasets and models read from s3:// URIs) with the outage window too."""
    import boto3

    from .s3_backend import redact_url

    client = boto3.client("s3", endpoint_url=endpoint_url)
    window = default_window_s()
    if window > 0:
        OutageRetry(window, redact_url(endpoint_url) or "(AWS)").register(client)
    return client
