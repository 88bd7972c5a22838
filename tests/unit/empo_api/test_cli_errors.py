"""Every `empo` command answers bad input with a message and exit status 2, never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from empo_cli.main import main
from empo_api.cli_errors import user_message

REPO = Path(__file__).resolve().parents[3]
TINY = (REPO / "examples" / "tiny.yaml").read_text()


def _run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse: usage error, exit 2
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def test_train_refuses_what_it_cannot_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EMPO_CACHE_DIR", str(tmp_path / "cache"))
    a_file = _file(tmp_path, "plain-file", "x")
    cases = [
        ([str(tmp_path / "missing.yaml")], "missing.yaml: cannot read: No such file or directory"),
        ([_file(tmp_path, "latin1.yaml", b"kind: Empo\xe9Run\n")], "not UTF-8 text"),
        ([_file(tmp_path, "broken.yaml", "kind: [EmpoRun\n")], "not valid YAML"),
        ([_file(tmp_path, "inf.yaml", TINY.replace("steps: 3", "epochs: .inf"))], "algorithm.epochs: Input should be a finite"),
        ([_file(tmp_path, "tiny.yaml", TINY), "--output", a_file + "/runs"], "cannot create the run folder"),
        ([_file(tmp_path, "tiny2.yaml", TINY), "--steps", "0"], "must be >= 1"),
    ]
    for argv, words in cases:
        code, out, err = _run(capsys, "train", *argv)
        assert code == 2 and words in err, (argv, err)


def test_train_refuses_a_corrupted_checkpoint_with_a_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EMPO_CACHE_DIR", str(tmp_path / "cache"))
    latest = tmp_path / "runs" / "default" / "tiny-smoke" / "checkpoints" / "LATEST"
    latest.parent.mkdir(parents=True)
    latest.write_text("{not json")
    code, _, err = _run(capsys, "train", _file(tmp_path, "tiny.yaml", TINY), "--output", str(tmp_path / "runs"))
    assert code == 2 and "LATEST is not a valid pointer" in err, err


def test_eval_checks_its_flags_before_loading_a_model(tmp_path, capsys):
    for argv, words in [(["--batch-size", "0"], "must be >= 1"), (["--dtype", "bogus"], "invalid choice: 'bogus'")]:
        code, _, err = _run(capsys, "eval", "--model", "bundled:tiny-random", *argv)
        assert code == 2 and words in err, err
    a_file = _file(tmp_path, "plain-file", "x")
    code, _, err = _run(capsys, "eval", "--model", str(tmp_path / "no-model"), "--out", a_file + "/out.json")
    assert code == 2 and "no-model" in err, err  # the model is checked first; then --out:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    code, _, err = _run(capsys, "eval", "--model", str(model), "--benchmarks", "arith-heldout", "--out", a_file + "/out.json")
    assert code == 2 and f"--out {a_file}/out.json: File exists" in err, err  # a file where a folder must be
    code, _, err = _run(capsys, "eval", "--model", str(model), "--benchmarks", "arith-heldout", "--out", str(tmp_path))
    assert code == 2 and "is a folder" in err, err


def test_render_refuses_bad_metadata_and_attempts(tmp_path, capsys):
    doc = yaml.safe_load(TINY)
    for meta, words in [(["x"], "metadata"), ({"name": "r", "labels": 5}, "labels")]:
        bad = dict(doc, metadata=meta)
        code, _, err = _run(capsys, "render", _file(tmp_path, "r.yaml", yaml.safe_dump(bad)))
        assert code in (1, 2) and words in err, err
    code, _, err = _run(capsys, "render", _file(tmp_path, "ok.yaml", TINY), "--attempt", "-5")
    assert code == 2 and "must be >= 0" in err


def test_sweep_dates_foreign_files_and_size(tmp_path, capsys):
    base = _file(tmp_path, "base.yaml", TINY)
    grid = _file(tmp_path, "grid.yaml", f"base: {base}\ngrid:\n  dataset.uri: [2024-01-01, data/b.jsonl]\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "foreign.yaml").write_text("metadata: [not, a, mapping]\n")
    (out / "other.yaml").write_text("- just\n- a list\n")
    code, stdout, err = _run(capsys, "sweep", grid, "--out", str(out), "--prune")
    assert code == 0, err
    assert (out / "foreign.yaml").exists() and (out / "other.yaml").exists()  # not ours: kept
    written = [yaml.safe_load(p.read_text()) for p in out.glob("tiny-smoke-*.yaml")]
    assert sorted(d["spec"]["dataset"]["uri"] for d in written) == ["2024-01-01", "data/b.jsonl"]
    huge = _file(tmp_path, "huge.yaml", f"base: {base}\ngrid:\n" + "".join(
        f"  algorithm.{k}: {list(range(1, 12))}\n" for k in ("seed", "gradientAccumulation", "promptsPerStep")))
    code, _, err = _run(capsys, "sweep", huge, "--out", "-")
    assert code == 2 and "1331 points; at most 1000" in err, err


def test_rewards_deep_json_and_bad_spec(tmp_path, capsys):
    deep = _file(tmp_path, "deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n")
    code, _, err = _run(capsys, "rewards", "--input", deep)
    assert code == 2 and "nested too deeply" in err, err
    spec = _file(tmp_path, "spec.yaml", "spec: 5\n")
    good = _file(tmp_path, "in.jsonl", json.dumps({"prompt": "1+1", "completions": ["\\boxed{2}"] * 2}) + "\n")
    code, _, err = _run(capsys, "rewards", "--input", good, "--spec", spec)
    assert code == 2 and "spec: expected a mapping" in err, err


def test_unexpected_errors_are_a_message_with_exit_2(capsys, monkeypatch):
    import empo_api.crd_cli as crd_cli

    def boom(args):
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(crd_cli, "run", boom)
    code, _, err = _run(capsys, "crd")
    assert code == 2 and err == "empo crd: error: the disk is on fire\n"


def test_errors_from_ray_actors_are_unwrapped():
    import ray.exceptions

    from empo_trainer.storage import PermissionDeniedError

    cause = PermissionDeniedError("put s3://b/x: access denied (AccessDenied)", "s3://b/x")
    wrapped = ray.exceptions.RayTaskError("LearnerActor.train", "Traceback ...", cause)
    assert user_message(wrapped) == "put s3://b/x: access denied (AccessDenied)"
    assert user_message(wrapped.as_instanceof_cause()) == "put s3://b/x: access denied (AccessDenied)"
    died = ray.exceptions.ActorDiedError(ray.exceptions.RayTaskError(
        "SamplerActor.__init__", "Traceback (most recent call last):\n  File ...\n"
        "empo_trainer.sampling.SamplerError: sampler.backend vllm needs the vllm package: pip install vllm",
        ImportError("x")))
    assert user_message(died) == ("a Ray actor could not start: sampler.backend vllm needs the vllm package: "
                                  "pip install vllm")


def test_storage_errors_cross_process_boundaries():
    import pickle

    from empo_trainer.storage import CheckpointVerificationError

    err = pickle.loads(pickle.dumps(CheckpointVerificationError("checkpoint s3://b/c is incomplete", "s3://b/c")))
    assert type(err) is CheckpointVerificationError and str(err) == "checkpoint s3://b/c is incomplete"
    assert err.uri == "s3://b/c"


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH="")
    out = subprocess.run([sys.executable, "-m", "empo_cli", "train", str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "nope.yaml" in out.stderr, out.stderr


def test_one_spec_error_for_the_operator_and_the_trainer():
    from empo_api.errors import SpecError
    from empo_operator import defaults, rayjob
    from empo_trainer import grpo_settings, tracking

    assert defaults.SpecError is rayjob.SpecError is grpo_settings.SpecError is SpecError
    assert issubclass(defaults.DefaultsError, SpecError) and issubclass(tracking.TrackingError, SpecError)
