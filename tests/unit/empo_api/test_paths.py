"""Keys and locations confined in one place (empo_api.paths): every traversal form in every field that
names a location is refused by the models, with the field named, and by the CRD's CEL rule; the
ordinary forms still pass. The trainer's half (downloads stay inside their cache folder) is in
tests/integration/trainer/storage/test_confined_downloads.py."""

import pytest

from empo_api import paths
from empo_api.crd import build_crd
from empo_api.validate import validate_manifest
from tests.unit.empo_api.test_refusals import _with  # examples/tiny.yaml with one field set

# (field, value, words of the message): the audit's 60 cases were these forms in these fields
TRAVERSALS = [
    ("spec.storage.uri", "s3://runs-x/../../../../trav-out", "'..' segment"),
    ("spec.storage.uri", "s3://runs-x/a/../../b", "'..' segment"),
    ("spec.storage.uri", "s3://runs-x//etc", "starts with '/'"),
    ("spec.storage.uri", "s3://runs-x/a//b", "empty segment"),
    ("spec.storage.uri", "s3://runs-x/./a", "'.' segment"),
    ("spec.storage.uri", "s3://runs-x/a\\..\\b", "backslash"),
    ("spec.storage.uri", "runs/../../etc", "'..' segment"),
    ("spec.storage.uri", "..", "'..' segment"),
    ("spec.storage.uri", "runs\\x", "backslash"),
    ("spec.model.source", "s3://models-x/../../../../trav-out", "'..' segment"),
    ("spec.model.source", "s3://models-x/m/..", "'..' segment"),
    ("spec.model.source", "s3://models-x//abs", "starts with '/'"),
    ("spec.model.source", "s3://models-x/m\\x", "backslash"),
    ("spec.model.source", "../../models/x", "'..' segment"),
    ("spec.model.source", "org/../../x", "'..' segment"),
    ("spec.model.source", "/models/../../etc", "'..' segment"),
    ("spec.model.source", "models\\x", "backslash"),
    ("spec.dataset.uri", "s3://data-x/../../y.jsonl", "'..' segment"),
    ("spec.dataset.uri", "s3://data-x//y.jsonl", "starts with '/'"),
    ("spec.dataset.uri", "hf://org/../x", "'..' segment"),
    ("spec.dataset.uri", "hf:///x", "starts with '/'"),
    ("spec.dataset.uri", "../data.jsonl", "'..' segment"),
    ("spec.dataset.uri", "data\\x.jsonl", "backslash"),
    ("spec.model.revision", "../x", "'..'"),
    ("spec.model.revision", "main/../../x", "'..'"),
    ("spec.model.revision", "a..b", "'..'"),
    ("spec.model.revision", "/etc", "starts with '/'"),
    ("spec.model.revision", "refs//x", "empty segment"),
    ("spec.model.revision", "a\\b", "backslash"),
    ("spec.model.revision", "main\n", "control character"),
    ("spec.eval.benchmarks", ["gpqa=s3://data-x/../y.jsonl"], "'..' segment"),
    ("spec.eval.benchmarks", ["gpqa=../y.jsonl"], "'..' segment"),
    ("spec.eval.benchmarks", ["math500=hf://org/../x"], "'..' segment"),
]


@pytest.mark.parametrize("field,value,words", TRAVERSALS, ids=[f"{f.split('.')[-1]}={v}" for f, v, _ in TRAVERSALS])
def test_traversal_is_refused_with_the_field_named(field, value, words):
    errors = validate_manifest(_with(field, value))
    assert any(e.path == field and words in e.message for e in errors), [str(e) for e in errors]


ACCEPTED = [
    ("spec.storage.uri", "s3://runs-x/team/runs/"), ("spec.storage.uri", "/var/empo/runs"),
    ("spec.storage.uri", "./runs"), ("spec.model.source", "s3://models-x/qwen/v1.5"),
    ("spec.model.source", "Qwen/Qwen2.5-Math-7B"), ("spec.model.source", "~/models/mine"),
    ("spec.model.source", "s3://models-x/%2e%2e/x"),  # nothing percent-decodes: an ordinary name
    ("spec.model.source", "s3://models-x/a..b/x"),  # '..' inside a name is not a segment
    ("spec.dataset.uri", "hf://openai/gsm8k"), ("spec.dataset.uri", "data/local/arith-train.jsonl"),
    ("spec.model.revision", "main"), ("spec.model.revision", "refs/pr/1"), ("spec.model.revision", "v1.0"),
    ("spec.model.revision", "0123456789abcdef0123456789abcdef01234567"),
    ("spec.eval.benchmarks", ["gpqa=s3://data-x/gpqa.jsonl"]),
]


@pytest.mark.parametrize("field,value", ACCEPTED, ids=[f"{f.split('.')[-1]}={v}" for f, v in ACCEPTED])
def test_ordinary_locations_still_pass(field, value):
    assert validate_manifest(_with(field, value)) == []


@pytest.mark.parametrize("key,problem", [
    ("a/b.json", None), ("a/b/", None), ("", "is empty"), ("/a", "starts with '/'"), ("a/../b", "'..' segment"),
    ("..", "'..' segment"), ("./a", "'.' segment"), ("a//b", "empty segment"), ("a\\b", "backslash"),
    ("a/\x00", "control character"), ("a/\x7f", "control character"),
])
def test_key_problem(key, problem):
    found = paths.key_problem(key)
    assert (found is None) if problem is None else (problem in found), found


def test_join_inside_refuses_a_symlink_out(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "link").symlink_to(tmp_path)
    assert paths.join_inside(tmp_path / "cache", "a/b", "key") == tmp_path / "cache" / "a" / "b"
    with pytest.raises(paths.UnsafePathError, match="key 'link/x' leads outside"):
        paths.join_inside(tmp_path / "cache", "link/x", "key")
    with pytest.raises(paths.UnsafePathError, match=r"key '\.\./x' has a '\.\.' segment"):
        paths.join_inside(tmp_path / "cache", "../x", "key")


def _schema(*fields: str) -> dict:
    node = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for f in fields:
        node = node["properties"][f]
    return node


@pytest.mark.parametrize("fields", [("storage", "uri"), ("model", "source"), ("model", "revision"), ("dataset", "uri")])
def test_the_api_server_refuses_traversal_too(fields):
    rules = _schema(*fields).get("x-kubernetes-validations", [])
    assert {"rule": paths.NO_TRAVERSAL_CEL, "message": paths.NO_TRAVERSAL_MESSAGE} in rules
    # the CEL string literal '\\' is one backslash; the regex refuses '..' only as a whole segment
    assert paths.NO_TRAVERSAL_CEL == "!self.matches('(^|/)[.][.](/|$)') && !self.contains('\\\\')"
