"""Render charts/empo-operator with Helm's own Go library (helm-python-sdk); no helm binary."""

from pathlib import Path

import helm_python as helm
import pytest

from tests.unit.gitops.yaml12 import load_all

REPO = Path(__file__).resolve().parents[3]
CHART_DIR = REPO / "charts" / "empo-operator"
RELEASE = "empo"
RELEASE_NAMESPACE = "empo-system"

# Installs the tests render: the defaults (cluster-wide) and one watching two namespaces.
NAMESPACED = {"watchNamespaces": ["ml-research", "ml-staging"]}


@pytest.fixture(scope="session")
def chart():
    c = helm.Chart.load(CHART_DIR)
    yield c
    c.close()


def render_docs(chart, values=None, namespace=RELEASE_NAMESPACE) -> list[dict]:
    """Every object the chart renders for `values`, in template order (NOTES.txt left out)."""
    out = chart.render(values=values or {}, name=RELEASE, namespace=namespace, is_install=True)
    docs = []
    for template, text in sorted(out.items()):
        if template.endswith("NOTES.txt"):
            continue
        # Read as the API server does: Helm's toYaml writes 1e-06, a string to YAML 1.1 readers.
        docs.extend(load_all(text))
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]
