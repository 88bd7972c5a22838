"""The operator, for real: `python -m empo_operator` in a subprocess against the KMock emulator
(tests/plugins/kmock_server.py). The example runs and the schemas children must satisfy are the unit
tests' (tests/unit/operator/conftest.py)."""

from pathlib import Path

import pytest

from tests.unit.operator.conftest import REPO, math_s3, rayjob_schema, tiny  # noqa: F401  (fixtures; REPO for test_kubectl)


# ---------------------------------------------------------------------------------------------
# the operator, for real: `python -m empo_operator` in a subprocess against the KMock emulator
# ---------------------------------------------------------------------------------------------

import itertools
import os
import socket
import urllib.request

from tests.plugins import operator_process
from tests.plugins.kmock_server import KubeEmulator, wait_for

_namespaces = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess(operator_process.OperatorProcess):
    """One operator process watching one namespace of the emulator."""

    def __init__(self, emulator: KubeEmulator, namespace: str, log_path: Path, **env: str) -> None:
        self.emulator, self.namespace, self.log_path = emulator, namespace, log_path
        self.health_port, self.metrics_port = free_port(), free_port()
        self.env = {**os.environ, "KUBECONFIG": str(emulator.kubeconfig), "EMPO_NAMESPACES": namespace,
                    "EMPO_PEERING": "", "EMPO_HEALTH_PORT": str(self.health_port),
                    "EMPO_METRICS_PORT": str(self.metrics_port), "EMPO_BIND_ADDRESS": "127.0.0.1",
                    "EMPO_TRAINER_IMAGE": "registry.example/empo-trainer:test",
                    "EMPO_RESTART_BACKOFF_SECONDS": "0.2", "EMPO_RESYNC_SECONDS": "1",
                    "EMPO_DEFAULT_STORAGE_URI": "s3://empo-runs/default", **env}

    def start(self) -> "OperatorProcess":
        self.emulator.add_namespace(self.namespace)
        return super().start()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
            return r.read().decode()


@pytest.fixture
def namespace() -> str:
    """A namespace of its own per test: operators and objects of other tests never meet."""
    return f"t{os.getpid()}-{next(_namespaces)}"


@pytest.fixture
def operator(kube_emulator, namespace, tmp_path):
    """A running operator watching `namespace`; its log is printed when a test fails."""
    procs: list[OperatorProcess] = []

    def start(**env: str) -> OperatorProcess:
        p = OperatorProcess(kube_emulator, namespace, tmp_path / "operator.log", **env)
        procs.append(p)
        return p.start()

    start.processes = procs
    yield start
    for p in procs:
        p.stop()


class Api:
    """The test's hands on the emulator (user, KubeRay and kubectl roles), over HTTP."""

    def __init__(self, emulator: KubeEmulator, namespace: str) -> None:
        from empo_operator.kube import Kube

        self.emulator, self.ns = emulator, namespace
        self.kube = Kube(emulator.client())

    def create_run(self, manifest: dict) -> dict:
        doc = {**manifest, "metadata": {**manifest["metadata"], "namespace": self.ns}}
        return self.kube.create(doc)[0]

    def run(self, name: str) -> dict | None:
        return self.kube.get("empo.dev/v1alpha1", "emporuns", self.ns, name)

    def status(self, name: str) -> dict:
        return (self.run(name) or {}).get("status") or {}

    def patch_spec(self, name: str, spec: dict) -> None:
        self.kube.patch("empo.dev/v1alpha1", "emporuns", self.ns, name, {"spec": spec})

    def rayjob(self, name: str) -> dict | None:
        return self.kube.get("ray.io/v1", "rayjobs", self.ns, name)

    def attempt_name(self, run: str, attempt: int = 0) -> str:
        from empo_operator.builders import rayjob_name
        return rayjob_name(run, self.run(run)["metadata"]["uid"], attempt)

    def attempt(self, run: str, attempt: int = 0) -> dict | None:
        """The RayJob of one attempt of a run (its name carries the run's uid)."""
        return self.rayjob(self.attempt_name(run, attempt))

    def kuberay_reports(self, rayjob: str, **status) -> None:
        """Play KubeRay: write the RayJob's status."""
        self.kube.patch("ray.io/v1", "rayjobs", self.ns, rayjob, {"status": status}, "status")

    def objects(self, plural: str) -> dict[str, dict]:
        return self.emulator.objects(plural, self.ns)

    def condition(self, name: str, ctype: str) -> dict:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == ctype), {})

    def wait_phase(self, name: str, phase: str, timeout: float = 15) -> dict:
        return wait_for(lambda: (s := self.status(name)).get("phase") == phase and s, timeout,
                        what=f"{name} phase {phase} (status: {self.status(name)})")


@pytest.fixture
def api(kube_emulator, namespace) -> Api:
    return Api(kube_emulator, namespace)
