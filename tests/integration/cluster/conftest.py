"""Tests on the real control plane (tests/plugins/control_plane.py). All are marked slow: the first
session on a machine builds the Kubernetes binaries (minutes), every session starts the cluster.

Fixtures
--------
``empo_release`` (session): `helm install` of charts/empo-operator, cluster-wide (release "empo" in
    namespace "empo-system"); it installs the EmpoRun CRD, so every test that needs the CRD asks for it.
``namespaced_release`` (session): a second install watching one namespace only (``.watched``),
    with ``crds.install=false`` (the first release owns the CRD).
``chart_operator`` (function): ``chart_operator(release)`` starts ``python -m empo_operator`` the way
    the release's Deployment would (its env, its ServiceAccount's token); stopped after the test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from tests.plugins.control_plane import ControlPlane
from tests.plugins.operator_process import OperatorProcess
from tests.plugins.seaweedfs import _free_ports

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "empo-operator"
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.slow)


@dataclass
class Release:
    name: str
    namespace: str
    service_account: str
    deployment: str
    watched: tuple[str, ...] = ()


def helm_install(cp: ControlPlane, name: str, namespace: str, *values: str) -> Release:
    cp.helm("install", name, CHART, "-n", namespace, "--create-namespace", *values)
    manifest = cp.helm("get", "manifest", name, "-n", namespace).stdout
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")["metadata"]["name"]
    return Release(name, namespace, sa, deployment)


@pytest.fixture(scope="session")
def empo_release(control_plane: ControlPlane) -> Release:
    # A short first retry so restart tests do not wait the production 10 s.
    return helm_install(control_plane, "empo", "empo-system", "--set", "restartBackoff.seconds=1")


@pytest.fixture(scope="session")
def namespaced_release(control_plane: ControlPlane, empo_release: Release) -> Release:
    watched = "empo-watched"
    control_plane.kubectl("create", "namespace", watched)
    release = helm_install(control_plane, "empo-ns", "empo-ns-system", "--set", "crds.install=false",
                           "--set", f"watchNamespaces={{{watched}}}", "--set", "restartBackoff.seconds=1")
    release.watched = (watched,)
    return release


class ChartOperator(OperatorProcess):
    """The operator process with the env of the release's Deployment and its ServiceAccount's token."""

    def __init__(self, cp: ControlPlane, release: Release, workdir: Path, **env: str) -> None:
        self.cp, self.release = cp, release
        self.kubeconfig = cp.service_account_kubeconfig(release.namespace, release.service_account,
                                                        workdir / f"{release.name}.kubeconfig")
        self.log_path = workdir / f"{release.name}-operator.log"
        self.health_port, self.metrics_port = _free_ports(2)
        self.env = {**os.environ, **self.deployment_env(), "KUBECONFIG": str(self.kubeconfig),
                    # The pod's ports are the chart's; here they must not collide with other processes.
                    "EMPO_HEALTH_PORT": str(self.health_port), "EMPO_METRICS_PORT": str(self.metrics_port),
                    "EMPO_BIND_ADDRESS": "127.0.0.1", **env}
        for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
            self.env.pop(var, None)  # never the in-cluster config of a machine that happens to be a pod

    def deployment_env(self) -> dict[str, str]:
        deployment = self.cp.get("deployment", self.release.deployment, self.release.namespace)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
            elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[var["name"]] = f"{self.release.deployment}-test"
        return env


@pytest.fixture
def chart_operator(control_plane: ControlPlane, tmp_path: Path) -> Iterator:
    started: list[ChartOperator] = []

    def start(release: Release, **env: str) -> ChartOperator:
        op = ChartOperator(control_plane, release, tmp_path, **env)
        started.append(op)
        return op.start()

    yield start
    for op in started:
        op.stop()
    # pytest shows what a fixture prints only when the test fails: the operator's side of the story.
    for op in started:
        print(f"--- {op.log_path} ---\n{op.log()[-6000:]}")
