"""The committed CRD is what the models generate, and Kubernetes would accept it."""

import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from empo_api.crd import PRINTER_COLUMNS, build_crd, crd_yaml

CRD_FILE = "crds/empo.dev_emporuns.yaml"


def test_committed_crd_equals_generated(repo):
    committed = (repo / CRD_FILE).read_text()
    assert committed == crd_yaml(), f"{CRD_FILE} is stale: run `make crd`"


def test_empo_crd_command_prints_the_committed_file(repo):
    out = subprocess.run([sys.executable, "-m", "empo_cli", "crd"], capture_output=True, text=True, check=True)
    assert out.stdout == (repo / CRD_FILE).read_text()


def test_crd_passes_kubernetes_validate_strict(repo):
    doc = yaml.safe_load((repo / CRD_FILE).read_text())
    kubernetes_validate.validate(doc, "1.32.0", strict=True)


def _walk(node, path=""):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural_and_documented():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"], "spec"):
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
        assert "type" in node, f"{path} has no type (not structural)"
        if not path.endswith(("[]", "{}")):  # list items and map values are described by their field
            assert node.get("description"), f"{path} has no description (kubectl explain would be empty)"
        if node["type"] == "object" and "properties" in node:
            assert "additionalProperties" not in node, path


def test_crd_shape():
    crd = build_crd()
    names = crd["spec"]["names"]
    assert (crd["spec"]["group"], names["kind"], names["plural"]) == ("empo.dev", "EmpoRun", "emporuns")
    assert names["shortNames"] and names["categories"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase", "Step", "Reward", "Entropy", "Accuracy", "Age"]
    assert version["additionalPrinterColumns"] == PRINTER_COLUMNS


@pytest.mark.parametrize("field,default", [
    ("numGenerations", 7), ("temperature", 0.9), ("learningRate", 1e-6), ("promptsPerStep", 112),
    ("beta", 0.0), ("maxCompletionLength", 2048), ("unanswered", "zero"), ("loss", "grpo"),
])
def test_defaults_are_the_papers(field, default):
    algorithm = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["algorithm"]
    assert algorithm["properties"][field]["default"] == default


def test_immutable_fields_have_transition_rules():
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for field in ("model", "dataset", "algorithm", "sampler", "learner"):
        rules = [r["rule"] for r in spec["properties"][field].get("x-kubernetes-validations", [])]
        assert "self == oldSelf" in rules, field
    assert "suspend" in spec["properties"] and not spec["properties"]["suspend"].get("x-kubernetes-validations")
