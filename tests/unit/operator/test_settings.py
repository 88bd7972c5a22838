"""Operator settings from the environment (the names the Helm chart sets)."""

import pytest

from empo_api.env_values import EnvValueError
from empo_operator.settings import Settings, from_env


@pytest.mark.parametrize("env, expected", [
    ({}, Settings()),
    ({"EMPO_NAMESPACES": " a, b ,,", "EMPO_PEERING": "empo"},
     Settings(namespaces=("a", "b"), peering="empo")),
    ({"EMPO_TRAINER_IMAGE": "img:1", "EMPO_DEFAULT_STORAGE_URI": "s3://b/p", "EMPO_S3_ENDPOINT": "http://s3:8333",
      "EMPO_METRICS_PORT": "9090", "EMPO_HEALTH_PORT": "0", "EMPO_LOG_FORMAT": "json"},
     Settings(trainer_image="img:1", default_storage_uri="s3://b/p", s3_endpoint="http://s3:8333",
              metrics_port=9090, health_port=0, log_format="json")),
    ({"EMPO_KUBERAY_NAMESPACE": "ray-system", "EMPO_DASHBOARD_CIDRS": "198.18.0.1/32, 10.0.0.0/8",
      "EMPO_RESTRICT_EGRESS": "false", "EMPO_API_SERVER_PORTS": "6443", "EMPO_API_SERVER_CIDRS": "10.0.0.1",
      "EMPO_EXTRA_EGRESS": '[{"ports": [{"port": 3128}]}]'},
     Settings(kuberay_namespace="ray-system", dashboard_cidrs=("198.18.0.1/32", "10.0.0.0/8"), restrict_egress=False,
              api_server_ports=(6443,), api_server_cidrs=("10.0.0.1/32",), extra_egress=({"ports": [{"port": 3128}]},))),
])
def test_from_env(env, expected):
    assert from_env(env) == expected


def test_defaults_are_the_documented_ones():
    s = from_env({})
    assert (s.metrics_port, s.health_port, s.log_format, s.clusterwide, s.standalone) == (8080, 8081, "plain", True, True)


@pytest.mark.parametrize("env, names", [
    ({"EMPO_METRICS_PORT": "http"}, "EMPO_METRICS_PORT"),
    ({"EMPO_HEALTH_PORT": "70000"}, "EMPO_HEALTH_PORT"),
    ({"EMPO_LOG_FORMAT": "xml"}, "EMPO_LOG_FORMAT"),
    ({"EMPO_RESTART_BACKOFF_SECONDS": "-1"}, "EMPO_RESTART_BACKOFF_SECONDS"),
    ({"EMPO_RESYNC_SECONDS": "0"}, "EMPO_RESYNC_SECONDS"),
    ({"EMPO_API_THREADS": "many"}, "EMPO_API_THREADS"),
    ({"EMPO_DASHBOARD_CIDRS": "10.0.0.0/33"}, "EMPO_DASHBOARD_CIDRS"),
    ({"EMPO_RESTRICT_EGRESS": "yes"}, "EMPO_RESTRICT_EGRESS"),
    ({"EMPO_API_SERVER_PORTS": "443,0"}, "EMPO_API_SERVER_PORTS"),
    ({"EMPO_EXTRA_EGRESS": '{"to": []}'}, "EMPO_EXTRA_EGRESS"),
    ({"EMPO_EXTRA_EGRESS": "[{"}, "EMPO_EXTRA_EGRESS"),
])
def test_bad_values_name_the_variable(env, names):
    with pytest.raises(EnvValueError, match=names):
        from_env(env)


def test_run_security_contexts_are_json_objects():
    assert from_env({"EMPO_RUN_POD_SECURITY_CONTEXT": "{}"}).run_pod_security_context == {}
    with pytest.raises(EnvValueError, match="EMPO_RUN_SECURITY_CONTEXT"):
        from_env({"EMPO_RUN_SECURITY_CONTEXT": "[1]"})


def test_the_cache_volume_is_one_volume_source():
    assert from_env({"EMPO_RUN_CACHE_VOLUME": '{"persistentVolumeClaim": {"claimName": "m"}}'}).run_cache_volume \
        == {"persistentVolumeClaim": {"claimName": "m"}}
    assert from_env({}).run_cache_volume == {}
    for bad in ('{"configMap": {"name": "x"}}', '{"emptyDir": {}, "hostPath": {"path": "/x"}}'):
        with pytest.raises(EnvValueError, match="EMPO_RUN_CACHE_VOLUME: expected one volume source"):
            from_env({"EMPO_RUN_CACHE_VOLUME": bad})
