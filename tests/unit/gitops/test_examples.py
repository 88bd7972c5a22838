"""Every EmpoRun under examples/ is one the API server and the operator accept: the plain files and
what `empo sweep` makes from the values grid (what kustomize builds from each overlay:
tests/integration/gitops/test_kustomize.py)."""

import argparse
from pathlib import Path

import pytest
import yaml

from empo_api import sweep
from empo_api.validate import validate_manifest

from .yaml12 import load_all

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
GITOPS = EXAMPLES / "gitops"


def _is_grid(path: Path) -> bool:
    doc = yaml.safe_load(path.read_text())
    return isinstance(doc, dict) and "grid" in doc


def _manifest_files() -> list[Path]:
    files = sorted(p for p in EXAMPLES.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    return [p for p in files if p.name != "kustomization.yaml" and not _is_grid(p)]


def _errors(docs: list) -> list[str]:
    return [f"{d.get('metadata', {}).get('name')}: {e}" for d in docs for e in validate_manifest(d)]


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_manifest_is_a_valid_emporun(path):
    docs = load_all(path.read_text())
    assert docs, f"{path} holds no manifest"
    assert _errors(docs) == []


def test_the_examples_cover_the_gitops_folders():
    names = {str(p.relative_to(EXAMPLES)) for p in _manifest_files()}
    assert "gitops/base/emporun.yaml" in names
    assert sum(n.startswith("gitops/sweep-runs/") for n in names) == 6


OVERLAYS = sorted(p.name for p in (GITOPS / "overlays").iterdir() if (p / "kustomization.yaml").exists())


def test_every_overlay_is_tested():
    assert OVERLAYS == ["staging", "temperature-sweep"]


def test_committed_sweep_runs_are_what_empo_sweep_generates(tmp_path):
    """sweep-runs/ is what Argo CD or Flux syncs; it must be regenerated when sweep.yaml or the base change."""
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    assert sweep.run(parser.parse_args([str(GITOPS / "sweep.yaml"), "--out", str(tmp_path)])) == 0
    generated = {p.name: p.read_text() for p in tmp_path.glob("*.yaml")}
    committed = {p.name: p.read_text() for p in (GITOPS / "sweep-runs").glob("*.yaml")}
    assert len(generated) == 6
    assert committed == generated, (
        "examples/gitops/sweep-runs is stale: run "
        "`empo sweep examples/gitops/sweep.yaml --out examples/gitops/sweep-runs --prune`")
    assert _errors([yaml.safe_load(t) for t in generated.values()]) == []
