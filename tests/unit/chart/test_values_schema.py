"""values.schema.json refuses values that would break or weaken the install, naming the key."""

import helm_python as helm
import pytest

from .conftest import render_docs


def test_defaults_pass(chart):
    chart.validate_schema(chart.values)
    chart.validate_schema({})


@pytest.mark.parametrize(
    "values, key",
    [
        ({"replicaCount": 2}, "replicaCount"),
        ({"replicaCount": 0}, "replicaCount"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"securityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
        ({"securityContext": {"privileged": True}}, "privileged"),
        ({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}, "drop"),
        ({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}, "add"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"watchNamespaces": ["ML_Research"]}, "watchNamespaces"),
        ({"watchNamespaces": ["a", "a"]}, "watchNamespaces"),
        ({"watchNamespaces": "ml-research"}, "watchNamespaces"),
        ({"peering": {"name": "Not A Name"}}, "name"),
        ({"storage": {"defaultUri": "http://bucket/prefix"}}, "defaultUri"),
        ({"storage": {"s3Endpoint": "minio:9000"}}, "s3Endpoint"),
        ({"metrics": {"port": 0}}, "port"),
        ({"health": {"port": 70000}}, "port"),
        ({"image": {"digest": "sha256:abc"}}, "digest"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"crds": {"install": "yes"}}, "install"),
        ({"replicas": 1}, "replicas"),  # a typo of replicaCount is not silently ignored
        ({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}}, "interval"),
    ],
)
def test_bad_values_are_refused(chart, values, key):
    with pytest.raises(helm.HelmValuesError) as err:
        chart.validate_schema(values)
    assert key in str(err.value)
    # an install runs the same check
    with pytest.raises(helm.HelmError):
        render_docs(chart, values)


@pytest.mark.parametrize(
    "values",
    [
        {"watchNamespaces": ["ml-research"], "peering": {"name": "empo"}},
        {"storage": {"defaultUri": "s3://empo-runs/exp", "s3Endpoint": "https://s3.example.com"}},
        {"logFormat": "json", "resources": {"requests": {"cpu": 1, "memory": "1Gi"}}},
        {"securityContext": {"runAsUser": 20000}},
    ],
)
def test_good_values_pass(chart, values):
    chart.validate_schema(values)
    assert render_docs(chart, values)
