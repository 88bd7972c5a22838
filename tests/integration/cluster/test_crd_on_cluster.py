"""The EmpoRun CRD served by a real API server: examples accepted, printer columns, explain, and bad
specs refused by the server's own validation (OpenAPI and CEL) with the field path."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from empo_api.models import parse_run
from tests.integration.cluster.test_chart_on_cluster import tiny_run
from tests.unit.gitops.test_examples import EXAMPLES, GITOPS, OVERLAYS, _manifest_files
from tests.unit.gitops.yaml12 import load_all


def dry_run(cp, docs: list[dict], namespace: str, *args: str, check: bool = True):
    docs = copy.deepcopy(docs)
    for d in docs:
        d["metadata"]["namespace"] = namespace
    return cp.kubectl("apply", "--dry-run=server", *args, "-f", "-", input=yaml.safe_dump_all(docs), check=check)


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_is_accepted_and_defaulted_as_the_models_default(control_plane, empo_release, cluster_namespace,
                                                                 path):
    for doc in load_all(path.read_text()):
        served = json.loads(dry_run(control_plane, [doc], cluster_namespace, "-o", "json").stdout)
        # The API server fills the CRD's defaults; the operator reads the result with the models. A CRD
        # default that differs from the model's changes the run behind the user's back.
        assert parse_run(served).spec.model_dump(mode="json") == parse_run(doc).spec.model_dump(mode="json")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_overlay_is_accepted_by_the_api_server(control_plane, empo_release, cluster_namespace, overlay):
    built = control_plane.kubectl("kustomize", GITOPS / "overlays" / overlay).stdout
    dry_run(control_plane, load_all(built), cluster_namespace)


def test_get_shows_the_printer_columns(control_plane, empo_release, cluster_namespace):
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(tiny_run("columns", cluster_namespace)))
    header = control_plane.kubectl("get", "emporuns", "-n", cluster_namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "STEP", "REWARD", "ENTROPY", "ACCURACY", "AGE"]


def test_explain_describes_the_algorithm(control_plane, empo_release):
    out = control_plane.kubectl("explain", "emporun.spec.algorithm").stdout
    assert "numGenerations" in out and "GROUP:      empo.dev" in out


def _refusal(cp, namespace: str, **spec) -> str:
    doc = tiny_run("bad", namespace)
    for path, value in spec.items():
        node = doc["spec"]
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    proc = dry_run(cp, [doc], namespace, check=False)
    assert proc.returncode != 0, f"the API server accepted {spec}"
    return proc.stderr


def test_out_of_range_value_is_refused_with_its_path(control_plane, empo_release, cluster_namespace):
    err = _refusal(control_plane, cluster_namespace, algorithm__numGenerations=1)
    assert "spec.algorithm.numGenerations" in err and "greater than or equal to 2" in err


def test_cel_rule_is_refused_with_its_path_and_message(control_plane, empo_release, cluster_namespace):
    err = _refusal(control_plane, cluster_namespace, algorithm__epochs=1)  # tiny.yaml sets steps
    assert "spec.algorithm" in err and "set algorithm.steps or algorithm.epochs, not both" in err


def test_unknown_field_is_refused_by_strict_validation(control_plane, empo_release, cluster_namespace):
    err = _refusal(control_plane, cluster_namespace, algorithm__numGenerationz=4)
    assert 'unknown field "spec.algorithm.numGenerationz"' in err


def test_immutable_change_is_refused_by_the_transition_rule(control_plane, empo_release, cluster_namespace):
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(tiny_run("frozen", cluster_namespace)))
    proc = control_plane.kubectl("patch", "emporun", "frozen", "-n", cluster_namespace, "--type=merge",
                                 "-p", '{"spec": {"algorithm": {"learningRate": 0.5}}}', check=False)
    assert proc.returncode != 0
    assert "spec.algorithm is immutable on a live run" in proc.stderr


# The real server applies the CRD's defaults; a `default: runs` on storage.uri once made every run
# checkpoint on its pod's disk, since the operator's EMPO_DEFAULT_STORAGE_URI only fills an unset uri.
def test_server_defaulting_leaves_storage_uri_unset(control_plane, empo_release, cluster_namespace):
    doc = tiny_run("defaults", cluster_namespace)
    del doc["spec"]["storage"]
    out = control_plane.kubectl("apply", "--dry-run=server", "-o", "yaml", "-f", "-", input=yaml.safe_dump(doc)).stdout
    assert "uri" not in (yaml.safe_load(out)["spec"].get("storage") or {})
