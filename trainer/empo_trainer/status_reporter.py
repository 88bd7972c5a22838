"""The trainer driver's reports into its EmpoRun's status (progress, checkpoint, eval).

`ProgressReporter.from_env()` in the driver: inside a run started by the operator (EMPO_RUN_NAME
set) it patches `emporuns/<name>/status` with the pod's service account (the operator's Role allows
exactly that); anywhere else it is a no-op. Patches are throttled (one per `min_interval` seconds, 30 by default, and only for a new step,
sent by a background thread, newest values win, the last one flushed on close) and never raise
into training: an unreachable API is logged and the values are sent with the next patch that gets
through. Importable without torch or Ray.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from typing import Any

from empo_api.models import API_VERSION, PLURAL, Checkpoint, EvalResult, Preemption, Progress

log = logging.getLogger(__name__)

# At most one status patch per run every 30 s: every patch is fanned out to every watcher of
# EmpoRuns (the operator, kubectl -w, Argo CD), so 1,000 runs at 10 s were 100 writes/s.
DEFAULT_INTERVAL = 30.0
REQUEST_TIMEOUT = (3.0, 5.0)  # connect, read: a stuck API costs at most this per try
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def step_progress(progress: dict[str, Any]) -> str | None:
    if progress.get("step") is None:
        return None
    total = progress.get("totalSteps")
    return f"{progress['step']}/{total}" if total else str(progress["step"])


class NullReporter:
    """What the driver gets outside a cluster: same methods, does nothing."""

    def report(self, progress: dict[str, Any]) -> None: ...
    def checkpoint(self, step: int, uri: str) -> None: ...
    def eval(self, result: dict[str, Any]) -> None: ...
    def preempted(self, step: int | None, message: str) -> None: ...
    def flush(self) -> bool: return True
    def close(self) -> None: ...


class ProgressReporter:
    """Patches one EmpoRun's status through the status subresource."""

    def __init__(self, name: str, namespace: str, *, api_client: Any = None, api_url: str | None = None,
                 kubeconfig: str | None = None, min_interval: float = DEFAULT_INTERVAL, attempt: int = 0) -> None:
        self.name, self.namespace = name, namespace
        self.attempt = attempt  # the operator's attempt number (EMPO_ATTEMPT)
        self.min_interval = min_interval
        self.path = f"/apis/{API_VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        self._api = api_client or _client(api_url, kubeconfig)
        self._pending: dict[str, Any] = {}
        self._last_step: int | None = None
        self._last_sent = float("-inf")
        self._failing = False
        self._closed = False
        self._cond = threading.Condition()
        self._sending = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="empo-progress", daemon=True)
        self._thread.start()
        self.patches_sent = 0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "ProgressReporter | NullReporter":
        env = dict(os.environ) if env is None else env
        name = env.get("EMPO_RUN_NAME", "").strip()
        if not name:
            return NullReporter()
        namespace = env.get("EMPO_RUN_NAMESPACE", "").strip() or _sa_namespace() or "default"
        interval = float(env.get("EMPO_PROGRESS_INTERVAL", "") or DEFAULT_INTERVAL)
        try:
            return cls(name, namespace, api_url=env.get("EMPO_API_URL") or None,
                       kubeconfig=env.get("EMPO_KUBECONFIG") or None, min_interval=interval,
                       attempt=int(env.get("EMPO_ATTEMPT", "") or 0))
        except Exception as exc:  # no credentials in this pod: train anyway
            log.warning("EmpoRun %s/%s: status reports disabled, cannot configure the API client: %s",
                        namespace, name, exc)
            return NullReporter()

    # -- what the driver calls ----------------------------------------------------------------

    def report(self, progress: dict[str, Any]) -> None:
        """Per-step numbers (status.progress, camelCase or snake_case keys)."""
        try:
            wire = Progress.model_validate({"updatedAt": _now(), **progress}).to_wire()
        except ValueError as exc:
            log.warning("progress not reported, it does not fit status.progress: %s", exc)
            return
        if wire.get("step") == self._last_step:
            return  # patched on change of step, checkpoint or eval only
        self._last_step = wire.get("step")
        self._queue({"progress": wire, "stepProgress": step_progress(wire)})

    def checkpoint(self, step: int, uri: str) -> None:
        self._queue({"latestCheckpoint": Checkpoint(step=step, uri=uri).to_wire()})

    def eval(self, result: dict[str, Any]) -> None:
        try:
            wire = EvalResult.model_validate(result).to_wire()
        except ValueError as exc:
            log.warning("eval result not reported, it does not fit status.lastEval: %s", exc)
            return
        self._queue({"lastEval": wire})

    def preempted(self, step: int | None, message: str) -> None:
        """status.lastPreemption: this attempt stopped when told to, with `step` checkpointed. The
        operator reads it when the attempt's RayJob ends, to start the next attempt at once and not
        count it against maxRestarts; the driver closes the reporter (which sends it) before it exits,
        so it is there before the Ray job can end."""
        self._queue({"lastPreemption": Preemption(attempt=self.attempt, step=step, time=_now(),
                                                  message=message[:1024]).to_wire()})

    def flush(self) -> bool:
        """Send what is pending now, ignoring the throttle; True when nothing is left pending."""
        with self._cond:
            patch, self._pending = self._pending, {}
        return self._send(patch) if patch else True

    def close(self, timeout: float = 15.0) -> None:
        """Stop the background thread and flush the last values (bounded by `timeout`)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self.flush()

    # -- internals ----------------------------------------------------------------------------

    def _queue(self, patch: dict[str, Any]) -> None:
        with self._cond:
            self._pending.update({k: v for k, v in patch.items() if v is not None})
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._pending or time.monotonic() < self._last_sent + self.min_interval):
                    wait = None if not self._pending else self._last_sent + self.min_interval - time.monotonic()
                    self._cond.wait(wait)
                if self._closed:
                    return
                patch, self._pending = self._pending, {}
            self._send(patch)

    def _send(self, patch: dict[str, Any]) -> bool:
        with self._sending:
            self._last_sent = time.monotonic()
            try:
                self._patch({"status": patch})
            except Exception as exc:  # never into training: keep the values for the next try
                if not self._failing:
                    log.warning("EmpoRun %s/%s: status patch failed (will retry with newer values): %s",
                                self.namespace, self.name, exc)
                self._failing = True
                with self._cond:
                    self._pending = {**patch, **self._pending}
                return False
            if self._failing:
                log.info("EmpoRun %s/%s: status patches go through again", self.namespace, self.name)
            self._failing = False
            self.patches_sent += 1
            return True


    def _patch(self, body: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}
        _, url, headers, body, _ = self._api.param_serialize("PATCH", self.path, header_params=headers, body=body,
                                                             auth_settings=["BearerToken"])
        resp = self._api.call_api("PATCH", url, header_params=headers, body=body, _request_timeout=REQUEST_TIMEOUT)
        resp.read()
        if not 200 <= resp.status < 300:
            raise RuntimeError(f"PATCH {self.path}: HTTP {resp.status} {resp.reason}: {resp.data[:300]!r}")


def _sa_namespace() -> str | None:
    try:
        with open(SA_NAMESPACE_FILE) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _client(api_url: str | None, kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    if api_url:
        conf = client.Configuration(host=api_url)
    elif kubeconfig:
        conf = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=conf)
    else:
        conf = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=conf)
        except config.ConfigException:
            config.load_kube_config(client_configuration=conf)
    conf.retries = 1  # bounded: one retry of a refused connection, then the next patch tries again
    return client.ApiClient(conf)
