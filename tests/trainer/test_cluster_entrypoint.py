"""The RayJob entrypoint runs the spec exactly as the operator writes it into the ConfigMap."""

import json
import subprocess
import sys

import pytest
import yaml

from empo_api.models import EmpoRun
from empo_operator.builders import CONFIG_KEY, ENTRYPOINT, build_configmap
from empo_operator.settings import Settings

from .conftest import REPO


@pytest.mark.slow
def test_entrypoint_trains_from_the_operators_configmap(tmp_path, empo_env):
    doc = yaml.safe_load((REPO / "examples/tiny.yaml").read_text())
    doc["metadata"]["namespace"] = "research"
    doc["spec"]["dataset"]["uri"] = str(REPO / "data/local/arith-train.jsonl")
    doc["spec"]["storage"]["uri"] = str(tmp_path / "store")
    doc["spec"]["eval"]["benchmarks"] = []
    configmap = build_configmap(EmpoRun.model_validate(doc), Settings())
    config = tmp_path / CONFIG_KEY
    config.write_text(configmap["data"][CONFIG_KEY])
    assert ENTRYPOINT.startswith("python -m empo_trainer run --config ")

    env = empo_env | {"EMPO_RUN_NAME": "tiny-smoke", "EMPO_RUN_NAMESPACE": "research"}
    result = subprocess.run([sys.executable, "-m", "empo_trainer", "run", "--config", str(config), "--steps", "1"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = (tmp_path / "store/research/tiny-smoke/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [1]
    latest = json.loads((tmp_path / "store/research/tiny-smoke/checkpoints/LATEST").read_text())
    assert latest["step"] == 1
