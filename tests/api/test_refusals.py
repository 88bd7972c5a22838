"""What used to pass `empo validate` and fail later (at apply, at render, after training) is refused
at validation, with the field named. One row per case found by fuzzing the examples (issue 18)."""

import copy
import time
from pathlib import Path

import pytest
import yaml

from empo_api.validate import validate_files, validate_manifest

REPO = Path(__file__).resolve().parents[2]
BASE = next(d for d in yaml.safe_load_all((REPO / "examples" / "tiny.yaml").read_text()) if isinstance(d, dict))


def _with(path: str, value):
    doc = copy.deepcopy(BASE)
    node = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return doc


# (field set, value, field the error must name, words the message must contain)
REFUSED = [
    ("spec.eval.benchmarks", ["math5000"], "spec.eval.benchmarks", "unknown benchmark 'math5000'"),
    ("spec.eval.benchmarks", ["gpqa"], "spec.eval.benchmarks", "gpqa=PATH_OR_S3_URI"),
    ("spec.eval.benchmarks", ["math500="], "spec.eval.benchmarks", "give the data after '='"),
    ("spec.ray.head.cpu", "1.2.3", "spec.ray.head.cpu", "pattern"),
    ("spec.ray.worker.memory", "16GiGi", "spec.ray.worker.memory", "pattern"),
    ("spec.ray.worker.memory", "-16Gi", "spec.ray.worker.memory", "pattern"),
    ("spec.algorithm.steps", 2**63, "spec.algorithm.steps", "less than or equal to 2147483647"),
    ("spec.algorithm.seed", 2**40, "spec.algorithm.seed", "less than or equal to 4294967295"),
    ("spec.activeDeadlineSeconds", 2**31, "spec.activeDeadlineSeconds", "less than or equal to 2147483647"),
    ("spec.ttlSecondsAfterFinished", 2**31, "spec.ttlSecondsAfterFinished", "less than or equal to 2147483647"),
    ("spec.prompt.system", "x" * (1 << 20), "spec.prompt.system", "at most 65536 characters"),
    ("spec.ray.tolerations", [{"operator": "Equal", "value": "x"}], "spec.ray.tolerations[0]", "operator Exists"),
    ("spec.ray.tolerations", [{"key": "a", "operator": "Exists", "value": "x"}], "spec.ray.tolerations[0]",
     "value must be empty"),
    ("spec.ray.tolerations", [{"key": "a", "tolerationSeconds": 5, "effect": "NoSchedule"}],
     "spec.ray.tolerations[0]", "NoExecute"),
    ("spec.ray.tolerations", [{"key": "bad key!", "operator": "Exists"}], "spec.ray.tolerations[0]", "qualified name"),
    ("spec.storage.uri", "s3://b..b/runs", "spec.storage.uri", "not a valid s3:// URI"),
    ("spec.storage.uri", "s3://bucket.-x/runs", "spec.storage.uri", "not a valid s3:// URI"),
    ("spec.model.source", "s3://192.168.1.10/m", "spec.model.source", "not a valid s3:// URI"),
    ("spec.algorithm.epochs", float("inf"), "spec.algorithm.epochs", "finite number"),
    ("spec.algorithm.temperature", float("nan"), "spec.algorithm.temperature", "finite number"),
    ("metadata.labels", 5, "metadata.labels", "valid dictionary"),
    ("metadata.labels", {"team": "not a label value!"}, "metadata.labels", "not a valid label value"),
    ("metadata", None, "metadata", "valid dictionary"),
    ("metadata", ["x"], "metadata", "valid dictionary"),
    ("spec.storage.endpoint", "http://user:pass@seaweed:8333", "spec.storage.endpoint", "credentials"),
    ("spec.dataset.uri", "hf://user:token@org/data", "spec.dataset.uri", "credentials"),
    ("spec.ray.nodeSelector", {f"k{i}": "v" for i in range(65)}, "spec.ray.nodeSelector", "at most 64"),
    ("apiVersion", "empo.dev/v1", "apiVersion", "expected empo.dev/v1alpha1"),
]


@pytest.mark.parametrize("path,value,field,words", REFUSED,
                         ids=[f"{p}={str(v)[:30]}" for p, v, _, _ in REFUSED])
def test_refused_with_the_field_named(path, value, field, words):
    doc = _with(path, value)
    if path == "spec.algorithm.epochs":
        del doc["spec"]["algorithm"]["steps"]
    errors = validate_manifest(doc)
    assert any(e.path == field and words in e.message for e in errors), [str(e) for e in errors]
    assert all(len(str(e)) < 800 for e in errors), "messages must not echo whole values"


def test_the_whole_spec_must_fit_a_configmap():
    doc = _with("spec.prompt.system", "x" * 60_000)
    doc["spec"]["prompt"]["userTemplate"] = "{question}" + "y" * 60_000
    doc["spec"]["eval"]["benchmarks"] = ["math500=" + "d" * 60_000] * 8
    errors = validate_manifest(doc)
    assert any(e.path == "spec" and "ConfigMap" in e.message for e in errors), [str(e) for e in errors]


def test_known_benchmark_names_are_the_trainers_registry():
    from empo_api.models import BENCHMARK_ALIASES, BENCHMARK_NAMES, BENCHMARKS_NEEDING_DATA
    from empo_trainer.evaluation.benchmarks import ALIASES, BENCHMARKS

    assert set(BENCHMARK_NAMES) == set(BENCHMARKS)
    assert BENCHMARK_ALIASES == ALIASES
    assert set(BENCHMARKS_NEEDING_DATA) == {n for n, d in BENCHMARKS.items() if not d.uri}


def test_accepted_edge_values_still_pass():
    for path, value in [("spec.ray.worker.memory", "1.5e3"), ("spec.ray.head.cpu", "500m"),
                        ("spec.ray.worker.memory", "16Gi"), ("spec.eval.benchmarks", ["gpqa=s3://data-bucket/gpqa.jsonl"]),
                        ("spec.eval.benchmarks", ["MINERVA", "arith-heldout=data/local/arith-heldout.jsonl"]),
                        ("spec.storage.endpoint", "http://seaweed:8333"),
                        ("spec.ray.tolerations", [{"operator": "Exists"}, {"key": "nvidia.com/gpu", "operator": "Exists",
                                                   "effect": "NoExecute", "tolerationSeconds": 60}]),
                        ("metadata.labels", {"app.kubernetes.io/part-of": "empo", "team": ""})]:
        assert validate_manifest(_with(path, value)) == [], (path, value)


# Files: (text or bytes, words of the message). All exit 1 with the file named, never a traceback.
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "j: *i\n"
FILES = [
    ("", "no manifest in the file"),
    ("~\n---\nnull\n", "no manifest in the file"),
    (b"apiVersion: empo.dev/v1alpha1\nkind: Empo\xffRun\n", "not UTF-8 text (byte 0xff on line 2)"),
    ("apiVersion: empo.dev/v1alpha1\nkind: EmpoRun\nkind: EmpoRun\n", "key 'kind' is given twice"),
    ("spec:\n" + "  " * 0 + "a: " + "[" * 100 + "]" * 100 + "\n", "nested deeper than 64 levels"),
    (BILLION_LAUGHS, "expands (through aliases) to more than 100000 values"),
    ("a: &a [*a]\n", "recursive alias"),
    ("a: " + "1" * 5000 + "\n", "cannot read a value"),
    ("a: [unclosed\n", "not valid YAML"),
]


@pytest.mark.parametrize("content,words", FILES, ids=[w for _, w in FILES])
def test_unreadable_files_are_one_message(tmp_path, content, words, capsys):
    path = tmp_path / "run.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    started = time.perf_counter()
    import io

    out = io.StringIO()
    assert validate_files([path], out=out) == 1
    assert time.perf_counter() - started < 2.0
    text = out.getvalue()
    assert text.startswith(f"{path}: ") and words in text, text
    assert len(text) < 600


def test_dates_and_number_keys_read_as_kubectl_reads_them(tmp_path):
    from empo_api.validate import load_yaml_documents

    (doc,) = load_yaml_documents("metadata:\n  labels:\n    since: 2024-01-01\n    1: one\n")
    assert doc == {"metadata": {"labels": {"since": "2024-01-01", "1": "one"}}}
