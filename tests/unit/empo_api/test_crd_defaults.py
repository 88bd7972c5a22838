"""One source of defaults: what the API server fills in from the CRD is what the models mean.

`server_defaults` applies the CRD's `default`s the way kube-apiserver's structural defaulting does
(top-down: a defaulted object gets its own properties' defaults too). The RayJob the operator builds
from the defaulted object must equal the one it builds from the object as the user wrote it.
"""

import copy

import pytest
import yaml

from empo_api.crd import build_crd
from empo_api.errors import SpecError
from empo_api.models import EmpoRun
from empo_operator.defaults import defaulted as operator_defaulted
from empo_operator.rayjob import build_rayjob
from empo_operator.settings import Settings

SETTINGS = Settings(trainer_image="registry.example/empo-trainer:1", default_storage_uri="s3://runs-bucket/empo")
MINIMAL = {"apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun", "metadata": {"name": "m", "namespace": "ns"},
           "spec": {"model": {"source": "Qwen/Qwen2.5-Math-1.5B"}, "dataset": {"uri": "s3://data/math.jsonl"}}}


def server_defaults(node: dict, obj):
    if isinstance(obj, dict) and node.get("type") == "object":
        for name, sub in (node.get("properties") or {}).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                obj[name] = server_defaults(sub, obj[name])
        if isinstance(node.get("additionalProperties"), dict):
            for k in obj:
                obj[k] = server_defaults(node["additionalProperties"], obj[k])
    elif isinstance(obj, list) and isinstance(node.get("items"), dict):
        obj = [server_defaults(node["items"], o) for o in obj]
    return obj


def defaulted(manifest: dict) -> dict:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return server_defaults(schema, copy.deepcopy(manifest))


def examples(repo):
    return [yaml.safe_load((repo / "examples" / f).read_text()) for f in ("math-s3.yaml", "free-form.yaml")]


def test_server_defaults_build_the_same_rayjob(repo):
    for manifest in [MINIMAL, *examples(repo)]:
        manifest = {**manifest, "metadata": {**manifest["metadata"], "namespace": "ns"}}
        as_written = EmpoRun.model_validate(manifest)
        as_stored = EmpoRun.model_validate(defaulted(manifest))
        assert as_stored.spec.to_wire() == as_written.spec.to_wire()
        assert build_rayjob(operator_defaulted(as_stored, SETTINGS), SETTINGS) == \
            build_rayjob(operator_defaulted(as_written, SETTINGS), SETTINGS)


def test_worker_pods_get_the_models_size():
    spec = defaulted(MINIMAL)["spec"]
    assert spec["ray"]["worker"] == {"cpu": "8", "memory": "64Gi"}
    assert spec["ray"]["head"] == {"cpu": "4", "memory": "16Gi"}


def test_storage_uri_is_left_to_the_operator():
    """No CRD default: the operator's configured storage applies, never a path inside the pod."""
    spec = defaulted(MINIMAL)["spec"]
    assert "uri" not in spec["storage"]
    run = EmpoRun.model_validate(defaulted(MINIMAL))
    assert operator_defaulted(run, SETTINGS).spec.storage.uri == "s3://runs-bucket/empo"


@pytest.mark.parametrize("uri, settings, message", [
    ("runs", SETTINGS, "spec.storage.uri 'runs' is a path inside the pod"),
    ("/data/runs", SETTINGS, "spec.storage.uri '/data/runs' is a path inside the pod"),
    (None, Settings(), "spec.storage.uri is unset and the operator has no default storage"),
])
def test_pod_local_storage_is_refused(uri, settings, message):
    manifest = copy.deepcopy(MINIMAL)
    if uri:
        manifest["spec"]["storage"] = {"uri": uri}
    run = EmpoRun.model_validate(defaulted(manifest))
    with pytest.raises(SpecError, match=message):
        operator_defaulted(run, settings)
