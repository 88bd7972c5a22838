"""The RayJob entrypoint runs the spec exactly as the operator writes it into the ConfigMap."""

import json
import subprocess
import sys

import pytest
import yaml

from empo_api.models import EmpoRun, StorageSpec
from empo_operator.builders import CONFIG_KEY, ENTRYPOINT, build_configmap
from empo_operator.settings import Settings
from empo_trainer.storage import open_run_storage

from .conftest import REPO


@pytest.mark.slow
def test_entrypoint_trains_from_the_operators_configmap(tmp_path, empo_env, s3_env):
    doc = yaml.safe_load((REPO / "examples/tiny.yaml").read_text())
    doc["metadata"]["namespace"] = "research"
    doc["spec"]["dataset"]["uri"] = str(REPO / "data/local/arith-train.jsonl")
    # On a cluster the operator refuses pod-local storage: the run's storage is its S3 default.
    del doc["spec"]["storage"]["uri"]
    doc["spec"]["eval"]["benchmarks"] = []
    settings = Settings(default_storage_uri=f"s3://{s3_env.new_bucket()}/runs", s3_endpoint=s3_env.endpoint)
    configmap = build_configmap(EmpoRun.model_validate(doc), settings)
    config = tmp_path / CONFIG_KEY
    config.write_text(configmap["data"][CONFIG_KEY])
    assert ENTRYPOINT.startswith("python -m empo_trainer run --config ")

    env = empo_env | s3_env.env() | {"EMPO_RUN_NAME": "tiny-smoke", "EMPO_RUN_NAMESPACE": "research",
                                     "EMPO_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "empo_trainer", "run", "--config", str(config), "--steps", "1"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(configmap["data"][CONFIG_KEY])["spec"]["storage"]
    assert written["uri"] == settings.default_storage_uri and written["endpoint"] == s3_env.endpoint
    storage = open_run_storage(StorageSpec.model_validate(written), "research", "tiny-smoke")
    assert [r["step"] for r in storage.read_metrics()] == [1]
    assert storage.read_json("checkpoints/LATEST")["step"] == 1
