"""Shared inputs of the operator tests: example runs and the schemas children must satisfy."""

from pathlib import Path

import pytest
import yaml

from empo_api import schema_check

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "tests" / "data" / "kuberay"


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


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
    return doc
