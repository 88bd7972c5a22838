"""What used to pass `empo validate` and fail later (at apply, at render, after training) is refused
at validation, with the field named. One row per case found by fuzzing the examples (issue 18)."""

import copy
import time
from pathlib import Path

import pytest
import yaml

from empo_api.validate import validate_files, validate_manifest

REPO = Path(__file__).resolve().parents[3]
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
    # odd tags and scalars: the field and the line named, never a KeyError or UnicodeEncodeError
    ("metadata: {name: !!bool maybe}\n", "metadata.name: the value is not a boolean (true or false) (line 1"),
    ("metadata:\n  name: !!int abc\n", "metadata.name: the value is not an integer (line 2"),
    ("metadata: {name: !!float x}\n", "metadata.name: the value is not a number"),
    ('metadata: {name: "\\ud800"}\n', "metadata.name: holds a lone surrogate"),
    ('spec: {model: {"\\udfff": x}}\n', "holds a lone surrogate"),
    ("metadata: {name: !!binary aGVsbG8=}\n", "metadata.name: the tag !!binary is not allowed"),
    ("metadata: {name: !!timestamp 2024-01-01}\n", "the tag !!timestamp is not allowed"),
    ("spec: !!set {a, b}\n", "spec: the tag !!set is not allowed"),
    ("spec: {ray: {env: [!!omap [a: 1]]}}\n", "spec.ray.env[0]: the tag !!omap is not allowed"),
    ("metadata: !!python/object:os.system x\n", "the tag !!python/object:os.system is not allowed"),
    ("metadata: {name: !local x}\n", "the tag !local is not allowed"),
    ("metadata: {name: !!int {a: 1}}\n", "metadata.name: expected a scalar node"),
    ("metadata: {name: !!seq x}\n", "metadata.name: the value is not a list"),
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


ODD_DOCUMENTS = [  # parse fine, hold the wrong types: field errors, never a crash
    "apiVersion: empo.dev/v1alpha1\nkind: EmpoRun\nmetadata: true\nspec: 5\n",
    "apiVersion: empo.dev/v1alpha1\nkind: EmpoRun\nmetadata: [1, 2]\nspec: [x]\n",
    "apiVersion: empo.dev/v1alpha1\nkind: EmpoRun\nmetadata: {name: null}\nspec: {model: [1], dataset: null}\n",
    "apiVersion: empo.dev/v1alpha1\nkind: EmpoRun\nmetadata: {name: [x], labels: [1]}\nspec: {ray: {env: 5}}\n",
    "apiVersion: 5\nkind: {a: 1}\n", "- a\n- b\n", "just a string\n", "12\n", "true\n",
]


def test_each_file_is_judged_on_its_own(tmp_path):
    """A file that cannot be read, or that used to crash the command, stops no file after it."""
    import io

    files = []
    for i, content in enumerate([c for c, _ in FILES] + ODD_DOCUMENTS):
        files.append(tmp_path / f"f{i}.yaml")
        files[-1].write_bytes(content if isinstance(content, bytes) else content.encode())
    good = tmp_path / "good.yaml"
    good.write_text((REPO / "examples" / "tiny.yaml").read_text())
    paths = [tmp_path / "missing.yaml", tmp_path, *files, good]
    out = io.StringIO()
    assert validate_files(paths, out=out) >= len(paths) - 1
    text = out.getvalue()
    assert "Traceback" not in text and "internal error" not in text, text
    for path in paths:
        assert any(line.startswith(f"{path}") for line in text.splitlines()), path
    assert f"{good}: ok (tiny-smoke)" in text


def test_the_command_exits_1_and_prints_every_file(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text('apiVersion: empo.dev/v1alpha1\nkind: EmpoRun\nmetadata: {name: "\\ud800x"}\n')
    maybe = tmp_path / "maybe.yaml"
    maybe.write_text("apiVersion: empo.dev/v1alpha1\nkind: EmpoRun\nmetadata: {name: !!bool maybe}\n")
    result = subprocess.run([sys.executable, "-m", "empo_cli", "validate", str(bad), str(maybe),
                             str(REPO / "examples" / "tiny.yaml")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1 and not result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0].split(" ")[0] for line in lines] == [str(bad), str(maybe), str(REPO / "examples" / "tiny.yaml")]


def test_budgets_apply_while_reading_and_parsing(tmp_path, monkeypatch):
    """A 3.6 MB document of 200,000 keys took 9 s and 368 MB to refuse when the size limit applied
    after parsing; now parsing stops at MAX_DOCUMENT_NODES values. A file past MAX_FILE_BYTES is
    refused after reading that many bytes."""
    import io

    from empo_api import manifest_yaml

    big = tmp_path / "big.yaml"
    big.write_text("apiVersion: empo.dev/v1alpha1\nkind: EmpoRun\nmetadata: {name: big}\nspec:\n  ray:\n"
                   "    nodeSelector:\n" + "".join(f"      k{i:07d}: v\n" for i in range(200_000)))
    started = time.perf_counter()
    out = io.StringIO()
    assert validate_files([big], out=out) == 1
    assert time.perf_counter() - started < 3.0, "refused while parsing, not after"
    assert f"more than {manifest_yaml.MAX_DOCUMENT_NODES} values in one document" in out.getvalue()

    class Endless(io.RawIOBase):  # /dev/zero, a FIFO that never ends
        served = 0

        def readable(self):
            return True

        def readinto(self, buffer):
            buffer[:] = b"#" * len(buffer)
            self.served += len(buffer)
            return len(buffer)

    stream = Endless()
    with pytest.raises(manifest_yaml.ManifestYamlError, match="larger than 4194304 bytes"):
        manifest_yaml.read_limited(io.BufferedReader(stream))
    assert stream.served <= manifest_yaml.MAX_FILE_BYTES + 64 * 1024
    monkeypatch.setattr(manifest_yaml, "MAX_FILE_NODES", 20_000)  # the same rule, a tenth of the time
    many = "".join(f"---\nk: [{', '.join(['1'] * 999)}]\n" for _ in range(21))  # 21 documents under the limit
    with pytest.raises(manifest_yaml.ManifestYamlError, match="more than 20000 values in the file"):
        manifest_yaml.load_yaml_documents(many)


def test_dates_and_number_keys_read_as_kubectl_reads_them(tmp_path):
    from empo_api.validate import load_yaml_documents

    (doc,) = load_yaml_documents("metadata:\n  labels:\n    since: 2024-01-01\n    1: one\n")
    assert doc == {"metadata": {"labels": {"since": "2024-01-01", "1": "one"}}}


# Credentials, in every field that takes a URI: refused, the field named, the secret never repeated
# (the audit saw `got 'http://AKIA...:secret@127.0.0.1:8333'` in 50 of 85 such cases).
KEY_ID, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
CREDENTIALS = [
    ("spec.storage.endpoint", f"http://{KEY_ID}:{SECRET}@127.0.0.1:8333"),
    ("spec.storage.endpoint", f"http://{KEY_ID}:{SECRET.replace('/', '%2F')}@127.0.0.1:8333"),
    ("spec.storage.uri", f"s3://{KEY_ID}:{SECRET}@runs-x/team"),
    ("spec.model.source", f"s3://{KEY_ID}:{SECRET}@models-x/m"),
    ("spec.model.source", f"https://{KEY_ID}:{SECRET}@hub.example.com/m"),
    ("spec.dataset.uri", f"hf://{KEY_ID}:{SECRET}@org/data"),
    ("spec.dataset.uri", f"s3://{KEY_ID}@data-x/d.jsonl"),
    ("spec.tracking.mlflow.trackingUri", f"https://{KEY_ID}:{SECRET}@mlflow.example.com"),
    ("spec.eval.benchmarks", [f"gpqa=s3://{KEY_ID}:{SECRET}@data-x/gpqa.jsonl"]),
]


def _no_secret_in(text: str) -> None:
    for secret in (KEY_ID, SECRET, SECRET.replace("/", "%2F")):
        for part in secret.replace("%2F", "/").split("/"):
            assert part not in text, f"{part!r} repeated in: {text}"
    assert "input_value" not in text


@pytest.mark.parametrize("path,value", CREDENTIALS, ids=[f"{p}-{i}" for i, (p, _) in enumerate(CREDENTIALS)])
def test_credentials_in_uris_are_refused_and_never_repeated(tmp_path, path, value):
    doc = _with(path, value)
    errors = validate_manifest(doc)
    field = path if path != "spec.eval.benchmarks" else "spec.eval.benchmarks"
    assert any(e.path == field and "credentials" in e.message for e in errors), [str(e) for e in errors]
    _no_secret_in("\n".join(map(str, errors)))
    # and through the command, the operator's status message and `empo render`
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump(doc))
    import io

    out = io.StringIO()
    assert validate_files([file], out=out) >= 1
    assert "***@" in out.getvalue() or path == "spec.eval.benchmarks", out.getvalue()
    _no_secret_in(out.getvalue())
    from empo_operator.lifecycle import validate_run
    from empo_operator.settings import Settings

    _, problem = validate_run({**doc, "metadata": {"name": "r", "namespace": "ns"}}, Settings())
    _no_secret_in(problem.message if problem else "")


SECRET_ENV = ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN", "WANDB_API_KEY", "DB_PASSWORD",
              "MLFLOW_TRACKING_PASSWORD", "GITHUB_TOKEN", "CLIENT_SECRET", "OPENAI_API_KEY", "hf_token", "MY_SECRET_SAUCE"]


@pytest.mark.parametrize("name", SECRET_ENV)
def test_literal_secrets_in_ray_env_are_refused_with_a_pointer_to_secret_key_ref(name, tmp_path):
    doc = _with("spec.ray", {"env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                                     {"name": name, "value": SECRET}]})
    errors = validate_manifest(doc)
    assert [e.path for e in errors] == ["spec.ray.env[1]"], [str(e) for e in errors]
    assert "secretKeyRef" in errors[0].message and name in errors[0].message
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump(doc))
    import io

    out = io.StringIO()
    validate_files([file], out=out)
    _no_secret_in(out.getvalue())


@pytest.mark.parametrize("value", [12345678901234, ["x"], {"a": SECRET}])
def test_a_secret_env_value_of_the_wrong_type_is_not_quoted(value):
    errors = validate_manifest(_with("spec.ray", {"env": [{"name": "HF_TOKEN", "value": value}]}))
    assert errors and all(e.path.startswith("spec.ray.env[0]") for e in errors), [str(e) for e in errors]
    assert "12345678901234" not in "\n".join(map(str, errors))
    _no_secret_in("\n".join(map(str, errors)))


def test_variables_that_only_look_alike_are_accepted():
    env = [{"name": n, "value": "1"} for n in ("TOKENIZERS_PARALLELISM", "HTTP_PROXY", "NCCL_DEBUG", "TOKEN_LIMIT_HINT")]
    env.append({"name": "HF_TOKEN", "secretKeyRef": {"name": "hf", "key": "token"}})
    assert validate_manifest(_with("spec.ray", {"env": env})) == []
