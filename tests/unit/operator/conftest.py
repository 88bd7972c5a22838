"""Shared inputs of the operator tests: example runs and the schemas children must satisfy."""

from pathlib import Path

import pytest
import yaml

from empo_api import schema_check

REPO = Path(__file__).resolve().parents[3]
KUBERAY = REPO / "tests" / "data" / "kuberay"


def load_yaml(path: Path) -> dict:
    # libyaml when present: KubeRay's CRD is ~10k lines, seconds for the pure-Python loader.
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@pytest.fixture(scope="session")
def rayjob_schema() -> dict:
    return schema_check.crd_schema(load_yaml(KUBERAY / "ray.io_rayjobs.yaml"), "v1")


@pytest.fixture(scope="session")
def math_s3() -> dict:
    return load_yaml(REPO / "examples" / "math-s3.yaml")


@pytest.fixture(scope="session")
def tiny() -> dict:
    doc = load_yaml(REPO / "examples" / "tiny.yaml")
    doc["metadata"]["namespace"] = "default"
    # On a cluster the operator refuses a local path (the pod's own disk).
    doc["spec"]["storage"]["uri"] = "s3://empo-runs/tests"
    return doc

