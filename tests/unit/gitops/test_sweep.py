"""`empo sweep`: grid expansion (pure, table-driven) and the command's files."""

import argparse
import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from empo_api import sweep
from empo_api.sweep import SweepError, expand_grid, point_name
from empo_api.validate import validate_manifest

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

BASE = {
    "apiVersion": "empo.dev/v1alpha1",
    "kind": "EmpoRun",
    "metadata": {"name": "base-run", "namespace": "ml", "labels": {"team": "rl"}},
    "spec": {
        "model": {"source": "Qwen/Qwen2.5-Math-1.5B"},
        "dataset": {"uri": "s3://empo-data/train.jsonl"},
        "algorithm": {"temperature": 0.9},
        "sampler": {"replicas": 4},  # engines for up to 4 learners: the grids below vary learner.replicas
    },
}


def _spec_at(doc, dotted):
    node = doc["spec"]
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize(
    "grid, expected_points",
    [
        # one key: one run per value, in the given order
        ({"algorithm.temperature": [0.6, 1.1]},
         [{"algorithm.temperature": 0.6}, {"algorithm.temperature": 1.1}]),
        # two keys: cartesian product, first key varies slowest
        ({"algorithm.numGenerations": [4, 8], "learner.replicas": [1, 2]},
         [{"algorithm.numGenerations": 4, "learner.replicas": 1},
          {"algorithm.numGenerations": 4, "learner.replicas": 2},
          {"algorithm.numGenerations": 8, "learner.replicas": 1},
          {"algorithm.numGenerations": 8, "learner.replicas": 2}]),
        # a path the base does not have yet: the mappings on the way are created
        ({"algorithm.entropyBand.high": [0.75]}, [{"algorithm.entropyBand.high": 0.75}]),
        # whole values (lists, mappings) replace what the base had
        ({"eval.benchmarks": [["math500"], ["aime24", "amc23"]]},
         [{"eval.benchmarks": ["math500"]}, {"eval.benchmarks": ["aime24", "amc23"]}]),
        ({"ray.worker": [{"cpu": "8", "memory": "64Gi"}]}, [{"ray.worker": {"cpu": "8", "memory": "64Gi"}}]),
    ],
)
def test_expand_grid_sets_every_point(grid, expected_points):
    base = copy.deepcopy(BASE)
    runs = expand_grid(base, grid)
    assert base == BASE, "the base manifest must not be modified"
    assert [{k: _spec_at(r, k) for k in grid} for r in runs] == expected_points
    for run, point in zip(runs, expected_points):
        # untouched fields are kept, metadata carries the sweep label and the point
        assert run["spec"]["model"] == BASE["spec"]["model"]
        assert run["metadata"]["namespace"] == "ml"
        assert run["metadata"]["labels"] == {"team": "rl", "empo.dev/sweep": "base-run"}
        assert json.loads(run["metadata"]["annotations"]["empo.dev/sweep-point"]) == point
        assert validate_manifest(run) == [], run["metadata"]["name"]
    names = [r["metadata"]["name"] for r in runs]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    "base_name, point, expected",
    [
        ("run", {"algorithm.temperature": 0.6}, r"^run-t0p6-[0-9a-f]{6}$"),
        ("run", {"algorithm.numGenerations": 4, "learner.replicas": 2}, r"^run-ng4-r2-[0-9a-f]{6}$"),
        ("run", {"algorithm.learningRate": 1e-06}, r"^run-lr1e-06-[0-9a-f]{6}$"),
        ("run", {"suspend": True}, r"^run-strue-[0-9a-f]{6}$"),
        ("run", {"sampler.backend": "transformers"}, r"^run-btransformers-[0-9a-f]{6}$"),
        ("run", {"model.source": "Qwen/Qwen2.5-7B"}, r"^run-sqwenqwen2p5-7b-[0-9a-f]{6}$"),
        # a long base name is cut so the whole name stays a 63-character DNS label
        ("a" * 60, {"algorithm.temperature": 0.6}, r"^a{56}-[0-9a-f]{6}$"),
        ("x" * 40, {"eval.benchmarks": ["math500", "minerva_math", "olympiadbench"]}, r"^x{40}-bmath500-minerv-[0-9a-f]{6}$"),
    ],
)
def test_point_names_are_readable_dns_labels(base_name, point, expected):
    name = point_name(base_name, point)
    assert re.match(expected, name), name
    assert len(name) <= 63 and DNS_LABEL.match(name)


def test_names_are_deterministic_and_tell_lossy_slugs_apart():
    # 0.6 and "0.6" slug the same way; the hash keeps them apart, and reruns give the same names.
    a = point_name("run", {"sampler.gpuMemoryUtilization": 0.6})
    b = point_name("run", {"sampler.gpuMemoryUtilization": "0.6"})
    assert a != b
    assert a == point_name("run", {"sampler.gpuMemoryUtilization": 0.6})


@pytest.mark.parametrize(
    "base_patch, grid, message",
    [
        ({}, {}, "grid: expected a mapping"),
        ({}, {"algorithm.temperature": []}, "non-empty list"),
        ({}, {"algorithm.temperature": 0.6}, "non-empty list"),
        ({}, {"algorithm.temperature": [0.6, 0.6]}, "repeated value"),
        ({}, {"spec.algorithm.temperature": [0.6]}, "relative to spec; write 'algorithm.temperature'"),
        ({}, {"algorithm..temperature": [0.6]}, "expected a dotted path"),
        ({}, {"algorithm.temperature.value": [1]}, "spec.algorithm.temperature is a float, not a mapping"),
        ({"metadata": {}}, {"algorithm.temperature": [0.6]}, "metadata.name"),
    ],
)
def test_bad_grids_name_the_key_at_fault(base_patch, grid, message):
    base = {**copy.deepcopy(BASE), **base_patch}
    with pytest.raises(SweepError, match=re.escape(message)):
        expand_grid(base, grid)


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


def _run(grid_file: Path, out: str, prune: bool = False) -> int:
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    return sweep.run(parser.parse_args([str(grid_file), "--out", out] + (["--prune"] if prune else [])))


def _write_grid(tmp_path: Path, grid: dict, embed: bool = False) -> Path:
    if embed:
        doc = {"template": BASE, "grid": grid}
    else:
        (tmp_path / "bases").mkdir(exist_ok=True)
        (tmp_path / "bases" / "run.yaml").write_text(yaml.safe_dump(BASE))
        doc = {"base": "bases/run.yaml", "grid": grid}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("embed", [False, True])
def test_sweep_writes_one_valid_manifest_per_point(tmp_path, embed, capsys):
    grid_file = _write_grid(tmp_path, {"algorithm.temperature": [0.6, 1.1], "learner.replicas": [1, 2, 4]}, embed)
    assert _run(grid_file, str(tmp_path / "out")) == 0
    files = sorted((tmp_path / "out").glob("*.yaml"))
    assert len(files) == 6
    points = set()
    for f in files:
        doc = yaml.safe_load(f.read_text())
        assert f.name == f"{doc['metadata']['name']}.yaml"
        assert validate_manifest(doc) == []
        points.add((doc["spec"]["algorithm"]["temperature"], doc["spec"]["learner"]["replicas"]))
    assert points == {(t, r) for t in (0.6, 1.1) for r in (1, 2, 4)}
    assert "wrote 6 EmpoRun manifest(s)" in capsys.readouterr().out


def test_sweep_refuses_invalid_points_and_writes_nothing(tmp_path, capsys):
    # numGenerations must be >= 2; the error names the run and the field.
    grid_file = _write_grid(tmp_path, {"algorithm.numGenerations": [1, 4]})
    assert _run(grid_file, str(tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert re.search(r"base-run-ng1-[0-9a-f]{6}: spec\.algorithm\.numGenerations: .*greater than or equal to 2", err), err
    assert "nothing written" in err
    assert not (tmp_path / "out").exists()


def test_sweep_reports_a_bad_grid_file(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"base": "missing.yaml", "template": BASE, "grid": {}}))
    assert _run(path, str(tmp_path / "out")) == 2
    assert "exactly one of 'base'" in capsys.readouterr().err
    path.write_text(yaml.safe_dump({"base": "missing.yaml", "grid": {"suspend": [True]}}))
    assert _run(path, str(tmp_path / "out")) == 2
    assert "missing.yaml: cannot read" in capsys.readouterr().err


def test_prune_deletes_only_points_this_sweep_no_longer_produces(tmp_path):
    out = tmp_path / "out"
    grid_file = _write_grid(tmp_path, {"algorithm.temperature": [0.6, 0.9, 1.1]})
    assert _run(grid_file, str(out)) == 0
    before = {p.name for p in out.glob("*.yaml")}
    (out / "hand-written.yaml").write_text(yaml.safe_dump(BASE))  # not ours: must survive
    grid_file = _write_grid(tmp_path, {"algorithm.temperature": [0.6, 0.9]})
    assert _run(grid_file, str(out), prune=True) == 0
    after = {p.name for p in out.glob("*.yaml")}
    assert after < before | {"hand-written.yaml"}
    assert "hand-written.yaml" in after
    assert len(after) == 3
    assert before - after == {point_name("base-run", {"algorithm.temperature": 1.1}) + ".yaml"}


def test_out_dash_prints_a_stream_kubectl_can_apply(tmp_path, capsys):
    grid_file = _write_grid(tmp_path, {"algorithm.temperature": [0.6, 0.9]})
    assert _run(grid_file, "-") == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["spec"]["algorithm"]["temperature"] for d in docs] == [0.6, 0.9]
