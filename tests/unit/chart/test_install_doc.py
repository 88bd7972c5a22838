"""The helm commands in docs/install.md work with this chart as written."""

import re

import helm_python as helm
import pytest

from .conftest import REPO, one, render_docs

DOC = (REPO / "docs" / "install.md").read_text()
SETS = re.findall(r"--set\s+'?([^\s'`]+)", DOC)


def test_doc_has_set_flags():
    assert len(SETS) >= 4


@pytest.mark.parametrize("expression", SETS)
def test_every_set_flag_is_a_valid_value(chart, expression):
    values = helm.parse_set_string(expression)
    chart.validate_schema(values)
    assert render_docs(chart, values)


def test_rollout_command_names_the_rendered_deployment(chart):
    # `helm install empo ...` then `kubectl rollout status deploy/<name>`
    name = one(render_docs(chart), "Deployment")["metadata"]["name"]
    assert f"deploy/{name}" in DOC


def test_values_table_names_real_values(chart):
    table_keys = re.findall(r"^\| `([a-zA-Z.]+)`", DOC, re.M)
    assert len(table_keys) >= 5
    for dotted in table_keys:
        node = chart.values
        for part in dotted.split("."):
            assert part in node, f"docs/install.md names {dotted}, which values.yaml does not have"
            node = node[part]
