"""What kustomize builds from each overlay of examples/gitops/ is a valid EmpoRun: `kubectl kustomize` with the
pinned kubectl (built by tools/k8s/build.sh, `make k8s-tools`). The plain example files are tests/unit/gitops/."""

import subprocess

import pytest

from tests.unit.gitops.test_examples import GITOPS, OVERLAYS, _errors
from tests.unit.gitops.yaml12 import load_all


@pytest.mark.parametrize("overlay, runs, namespace", [("staging", 1, "empo-staging"), ("temperature-sweep", 3, None)])
def test_kustomize_overlay_builds_valid_emporuns(kubectl_path, overlay, runs, namespace):
    assert overlay in OVERLAYS
    out = subprocess.run([kubectl_path, "kustomize", str(GITOPS / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    docs = load_all(out)
    assert len(docs) == runs
    assert {d["kind"] for d in docs} == {"EmpoRun"}
    assert {d["metadata"].get("namespace") for d in docs} == {namespace}
    assert len({d["metadata"]["name"] for d in docs}) == runs
    assert _errors(docs) == []


def test_temperature_sweep_differs_only_in_temperature(kubectl_path):
    out = subprocess.run([kubectl_path, "kustomize", str(GITOPS / "overlays" / "temperature-sweep")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    docs = load_all(out)
    assert sorted(d["spec"]["algorithm"].pop("temperature") for d in docs) == [0.6, 0.9, 1.1]
    assert all(d["spec"] == docs[0]["spec"] for d in docs)
