"""The RayJob entrypoint runs the spec exactly as the operator writes it into the ConfigMap (the
session's entrypoint run, conftest.py, shared with test_model_staging)."""

import json

import pytest

from empo_api.models import StorageSpec
from empo_operator.builders import CONFIG_KEY
from empo_operator.rayjob import ENTRYPOINT
from empo_trainer.storage import open_run_storage


@pytest.mark.slow
def test_entrypoint_trains_from_the_operators_configmap(entrypoint_run, s3_env):
    assert ENTRYPOINT.startswith("python -m empo_trainer run --config ")
    result = entrypoint_run.result
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(entrypoint_run.configmap["data"][CONFIG_KEY])["spec"]["storage"]
    assert written["uri"] == entrypoint_run.storage_uri and written["endpoint"] == s3_env.endpoint
    storage = open_run_storage(StorageSpec.model_validate(written), "research", "tiny-smoke")
    assert [r["step"] for r in storage.read_metrics()] == [1]
    assert storage.read_json("checkpoints/LATEST")["step"] == 1
