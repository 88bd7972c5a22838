"""`empo render`: exactly the manifests the operator creates, as a YAML stream."""

import os
import subprocess
import sys

import yaml

from empo_api.models import EmpoRun
from empo_operator import builders, settings
from empo_operator.children import build_children
from empo_operator.defaults import defaulted
from tests.unit.operator.conftest import REPO


def render(*args, env=None):
    return subprocess.run([sys.executable, "-m", "empo_cli", "render", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=60)


def test_render_prints_the_operators_children():
    out = render("examples/math-s3.yaml", env={"EMPO_TRAINER_IMAGE": "registry.example/t:1"})
    assert out.returncode == 0, out.stderr
    docs = list(yaml.safe_load_all(out.stdout))
    manifest = yaml.safe_load((REPO / "examples" / "math-s3.yaml").read_text())
    operator = settings.Settings(trainer_image="registry.example/t:1")
    expected = build_children(defaulted(EmpoRun.model_validate(manifest), operator), operator)
    assert docs == expected
    assert [d["kind"] for d in docs] == ["ConfigMap", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "RayJob"]


def test_render_an_attempt_and_owner_labels(tmp_path):
    manifest = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
    manifest["metadata"]["labels"] = {"team": "rl"}
    manifest["spec"]["storage"]["uri"] = "s3://empo-runs/tests"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(manifest))
    docs = list(yaml.safe_load_all(render(str(path), "--attempt", "2").stdout))
    assert docs[-1]["metadata"]["name"] == "tiny-smoke-00000-2"  # the uid part is the API server's
    assert all(d["metadata"]["labels"]["team"] == "rl" and d["metadata"]["namespace"] == "default" for d in docs)


def test_render_refuses_an_invalid_run_naming_the_field(tmp_path):
    manifest = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
    manifest["spec"]["algorithm"]["reward"] = "gold"
    del manifest["spec"]["dataset"]["answerField"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(manifest))
    out = render(str(path))
    assert out.returncode == 1 and out.stdout == ""
    assert "answerField" in out.stderr and "bad.yaml" in out.stderr
