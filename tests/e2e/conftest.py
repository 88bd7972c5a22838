"""End-to-end tests on a cluster whose node runs pods (tests/plugins/node.py): the images built by
tools/images/build.sh, the chart's operator as a Deployment, KubeRay's pods, the trainer in them.
All are slow: the first session on a machine builds the node's binaries and the images."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.plugins.node import NODE_IP, NodeCluster, start_node_cluster
from tests.plugins.seaweedfs import S3Server, start_seaweedfs

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="package")
def node_cluster() -> Iterator[NodeCluster]:
    """A cluster with a node, for this package only: stopped before the rest of the session."""
    if os.geteuid() != 0:
        pytest.fail("the test node needs root (network, mounts, cgroups); the CI machines run as root")
    with tempfile.TemporaryDirectory(prefix="empo-node-") as workdir:
        with start_node_cluster(Path(workdir)) as nc:
            yield nc


@pytest.fixture(scope="package")
def pod_s3(node_cluster) -> Iterator[S3Server]:
    """A SeaweedFS the pods reach: bound to the node's bridge address, not loopback."""
    with tempfile.TemporaryDirectory(prefix="empo-weed-pods-") as short:
        with start_seaweedfs(Path(short), ip=NODE_IP) as server:
            yield server


@pytest.fixture
def cluster_namespace_on_node(node_cluster) -> Iterator[str]:
    name = node_cluster.cp.create_namespace("node")
    yield name
    node_cluster.cp.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="package")
def chart_operator_pod(node_cluster, pod_s3) -> str:
    """`helm install` of the chart with the operator image built here; its namespace."""
    from tests.e2e.flow import install_operator

    return install_operator(node_cluster, pod_s3)


@pytest.fixture
def flow_log():
    """Every new connection the kernel tracks during the test (tests/e2e/policy_check.py)."""
    from tests.e2e.policy_check import FlowLog

    log = FlowLog().start()
    yield log
    log.stop()
