"""`empo validate`: examples pass; every bad spec gets an error naming its field."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from empo_api import schema_check
from empo_api.crd import openapi_schema
from empo_api.models import EmpoRun
from empo_api.validate import validate_manifest

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*.yaml")
                  if any(d.get("kind") == "EmpoRun" for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict)))


def _runs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and d.get("kind") == "EmpoRun"]


def test_there_are_examples():
    names = {p.name for p in EXAMPLES}
    assert {"math-s3.yaml", "free-form.yaml", "local-cpu.yaml", "tiny.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_example_is_valid_for_schema_and_models(path):
    for doc in _runs(path):
        assert schema_check.check(doc, openapi_schema()) == []  # strict: unknown fields rejected
        EmpoRun.model_validate(doc)
        assert validate_manifest(doc) == []


BASE = _runs(REPO / "examples" / "math-s3.yaml")[0]


def _with(path, value):
    doc = copy.deepcopy(BASE)
    node = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    if value is _DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return doc


_DELETE = object()

BAD = [
    ("spec.algorithm.numGenerations", 1, "greater than or equal to 2"),
    ("spec.algorithm.numGenerations", "seven", "valid integer"),
    ("spec.algorithm.numGenerations", 257, "less than or equal to 256"),
    ("spec.algorithm.loss", "ppo", "'grpo'"),
    ("spec.algorithm.temperature", 0, "greater than 0"),
    ("spec.storage.uri", "s3://", "not a valid s3:// URI"),
    ("spec.storage.uri", "gs://bucket/x", "allowed are s3://bucket/prefix or a local path"),
    ("spec.dataset.uri", "ftp://host/file", "allowed are a local path"),
    ("spec.model", _DELETE, "required"),
    ("spec.storage.secretAccessKey", "AKIA-SECRET", "credentialsSecretRef"),
    ("spec.sampler.backend", "sglang", "'vllm' or 'transformers'"),
    ("spec.sampler.tensorParallelSize", 3, "multiple of tensorParallelSize"),
    ("spec.algorithm.entropyBand.low", 1.0, "must be below high"),
    ("spec.algorithm.epochs", 1, "steps or epochs, not both"),  # the example sets... (see below)
    ("spec.algorithm.clustering.method", "judge", "judgeModel is required"),
    ("spec.algorithm.reward", "gold", "answerField"),
    ("spec.queueName", "Not_A_Label", "pattern"),
    ("spec.prompt.userTemplate", "no placeholder", "{question}"),
    ("spec.algorithm.gradientAccumulation", 5, "must be divisible by"),
    ("spec.unknownField", 1, "unknown field"),
    ("metadata.name", "Bad_Name", "pattern"),
]


@pytest.mark.parametrize("path,value,expected", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_bad_spec_names_the_field(path, value, expected):
    doc = _with(path, value)
    if path == "spec.algorithm.epochs":
        doc["spec"]["algorithm"]["steps"] = 10
    errors = validate_manifest(doc)
    assert errors, f"{path}={value!r} was accepted"
    field = path.rsplit(".", 1)[0] if path.endswith(("low", "epochs")) or "secretAccessKey" in path \
        or path.endswith(("tensorParallelSize", "method", "reward")) else path
    matching = [e for e in errors if e.path.startswith(field.split(".")[0]) and field.split(".")[-1] in e.path + e.message]
    assert any(expected in e.message for e in errors), [str(e) for e in errors]
    assert matching, [str(e) for e in errors]


def test_cli_exit_codes_and_messages(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_with("spec.algorithm.numGenerations", 1)))
    ok = subprocess.run([sys.executable, "-m", "empo_cli", "validate", str(REPO / "examples/math-s3.yaml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out = subprocess.run([sys.executable, "-m", "empo_cli", "validate", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "spec.algorithm.numGenerations" in out.stdout and "greater than or equal to 2" in out.stdout


def test_wrong_kind_is_refused():
    errors = validate_manifest({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    assert {e.path: e.message for e in errors} == {"apiVersion": "expected empo.dev/v1alpha1, got 'v1'",
                                                   "kind": "expected EmpoRun, got 'ConfigMap'"}
    # a wrong apiVersion alone is reported under apiVersion, not kind
    assert [e.path for e in validate_manifest({**BASE, "apiVersion": "empo.dev/v1"})] == ["apiVersion"]


def test_exponent_floats_read_as_numbers_like_kubectl():
    from empo_api.validate import load_yaml_documents

    text = yaml.safe_dump(BASE).replace("learningRate: 1.0e-06", "learningRate: 1e-06")
    assert "learningRate: 1e-06" in text
    (doc,) = load_yaml_documents(text)
    assert doc["spec"]["algorithm"]["learningRate"] == 1e-06
    assert validate_manifest(doc) == []


@pytest.mark.parametrize("sampler", [{"backend": "vllm", "gpusPerReplica": 0},  # vLLM's CPU build: its own engine
                                     {"backend": "vllm", "gpusPerReplica": 1},
                                     {"backend": "transformers", "gpusPerReplica": 1}])
def test_top_p_below_1_with_sampler_engines_of_their_own_is_refused(sampler):
    """Their processed log-probs are renormalised over the nucleus, the learner's are not: the
    importance-sampling ratio would down-weight every token (max log-prob gap 0.22 at topP 0.8)."""
    doc = _with("spec.algorithm.topP", 0.8)
    doc["spec"]["sampler"] = sampler
    doc["spec"]["learner"] = {"gpusPerReplica": 1}
    errors = validate_manifest(doc)
    assert any("algorithm.topP is 0.8" in e.message and "sampler.replicas 0" in e.message for e in errors), \
        [str(e) for e in errors]


def test_top_p_below_1_generating_in_the_learners_is_accepted():
    for sampler in ({"backend": "transformers", "gpusPerReplica": 0}, {"backend": "vllm", "replicas": 0}):
        doc = _with("spec.algorithm.topP", 0.8)
        doc["spec"]["sampler"] = sampler
        doc["spec"]["learner"] = {"gpusPerReplica": 1}
        assert not validate_manifest(doc), [str(e) for e in validate_manifest(doc)]
    assert not validate_manifest(_with("spec.algorithm.topP", 1.0))
