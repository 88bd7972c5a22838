"""The chart installs the generated EmpoRun CRD unchanged, upgradeable, and kept on uninstall."""

import kubernetes_validate
import pytest
import yaml

from empo_api.crd import crd_yaml

from .conftest import CHART_DIR, REPO, by_kind, render_docs

CHART_COPY = CHART_DIR / "files" / "crds" / "empo.dev_emporuns.yaml"
GENERATED = REPO / "crds" / "empo.dev_emporuns.yaml"


def test_chart_copy_equals_crds_folder():
    assert CHART_COPY.read_bytes() == GENERATED.read_bytes(), (
        "charts/empo-operator/files/crds/ is stale: run "
        "`cp crds/empo.dev_emporuns.yaml charts/empo-operator/files/crds/` after `make crd`")


def test_chart_copy_is_what_the_models_generate():
    assert yaml.safe_load(CHART_COPY.read_text()) == yaml.safe_load(crd_yaml())


@pytest.mark.parametrize("keep", [True, False])
def test_rendered_crd_is_the_generated_one_plus_labels(chart, keep):
    (crd,) = by_kind(render_docs(chart, {"crds": {"keep": keep}}), "CustomResourceDefinition")
    expected = yaml.safe_load(GENERATED.read_text())
    meta = crd.pop("metadata")
    expected_meta = expected.pop("metadata")
    assert crd == expected  # spec unchanged through Helm's fromYaml/toYaml
    assert meta["name"] == expected_meta["name"] == "emporuns.empo.dev"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    # cert-manager's upgrade story: templated (upgraded by helm upgrade), kept on uninstall
    assert meta.get("annotations", {}).get("helm.sh/resource-policy") == ("keep" if keep else None)


def test_crd_can_be_left_to_someone_else(chart):
    assert by_kind(render_docs(chart, {"crds": {"install": False}}), "CustomResourceDefinition") == []


def test_rendered_crd_is_a_valid_crd(chart):
    (crd,) = by_kind(render_docs(chart), "CustomResourceDefinition")
    kubernetes_validate.validate(crd, "1.30.0", strict=True)
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Step", "Reward", "Entropy", "Accuracy", "Age"]


def test_helm_crds_folder_is_not_used(chart):
    # Helm installs crds/ once and never upgrades it; the CRD must come only from the template.
    assert chart.crds == []
