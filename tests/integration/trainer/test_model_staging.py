"""The model is staged once into the run's storage (real SeaweedFS), verified, and used by the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from empo_api.models import StorageSpec
from empo_trainer import model_source, model_staging
from empo_trainer.storage import open_run_storage
from tests.unit.trainer.test_model_staging import _spec


@pytest.fixture
def tiny_on_s3(s3_env, monkeypatch, tmp_path):
    """The tiny model served from the test's S3 server, and a fresh model cache."""
    tiny = Path(model_source.resolve(model_source.BUNDLED_TINY))  # resolved before the cache moves
    bucket = s3_env.new_bucket()
    client = s3_env.client()
    for f in sorted(p for p in tiny.iterdir() if p.is_file()):
        client.upload_file(str(f), bucket, f"models/tiny/{f.name}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    monkeypatch.setenv("EMPO_CACHE_DIR", str(tmp_path / "cache"))
    return f"s3://{bucket}/models/tiny", tiny


def test_model_is_staged_once_with_checksums_and_loads_from_the_copy(s3_env, tiny_on_s3, monkeypatch, tmp_path):
    source, tiny = tiny_on_s3
    spec = _spec(source, f"s3://{s3_env.new_bucket()}/runs", s3_env.endpoint)
    storage = open_run_storage(spec.storage, "research", "qwen")

    staged, copied = model_staging.stage(spec, storage)
    assert copied and staged.model.source == storage.uri_of("model") and staged.model.source.startswith("s3://")
    manifest = storage.read_json("model/empo-manifest.json")
    assert manifest["source"] == source
    assert manifest["files"]["model.safetensors"]["sha256"] == model_staging.sha256_file(tiny / "model.safetensors")
    assert {f"model/{rel}" for rel in manifest["files"]} | {"model/empo-manifest.json"} == set(storage.list("model/"))

    # found already staged: nothing is fetched from the source again (it is gone)
    client = s3_env.client()
    bucket, prefix = source[len("s3://"):].split("/", 1)
    for obj in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
        client.delete_object(Bucket=bucket, Key=obj["Key"])
    again, copied = model_staging.stage(spec, storage)
    assert not copied and again.model.source == staged.model.source

    # what every actor does with the spec it is given: download the copy, verify it, load it
    path = model_source.resolve(again.model.source)
    model = model_source.load_causal_lm(path)
    assert model.num_parameters() == model_source.load_causal_lm(str(tiny)).num_parameters()


def test_a_corrupt_staged_copy_is_refused_before_use(s3_env, tiny_on_s3):
    source, _ = tiny_on_s3
    spec = _spec(source, f"s3://{s3_env.new_bucket()}/runs", s3_env.endpoint)
    storage = open_run_storage(spec.storage, "research", "qwen")
    staged, _ = model_staging.stage(spec, storage)
    weights = bytearray(storage.read_bytes("model/model.safetensors"))
    weights[-1] ^= 0xFF  # one flipped bit in the last tensor
    storage.write_bytes("model/model.safetensors", bytes(weights))
    with pytest.raises(model_source.ModelSourceError, match=r"model\.safetensors does not match its manifest"):
        model_source.resolve(staged.model.source)
    assert not list((Path(model_source.cache_dir()) / "models" / "staged").glob("*/config.json"))  # nothing cached


@pytest.mark.slow
def test_a_run_trains_on_the_staged_model(s3_env, entrypoint_run, tmp_path):
    """The RayJob entrypoint with the model and the run's storage on S3 (the session's run,
    conftest.py): the driver stages the model, the actors load the staged, verified copy."""
    result = entrypoint_run.result
    assert result.returncode == 0, result.stderr[-3000:]
    storage = open_run_storage(StorageSpec(uri=entrypoint_run.storage_uri, endpoint=s3_env.endpoint), "research",
                               "tiny-smoke")
    assert storage.read_json("model/empo-manifest.json")["source"] == entrypoint_run.source
    assert [r["step"] for r in storage.read_metrics()] == [1]
    # the actors loaded the staged copy, downloaded and verified (cached under its manifest's digest)
    assert list((entrypoint_run.cache / "models").glob("staged/*/config.json"))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events] = [k for k in storage.list("tensorboard/") if "tfevents" in k]
    storage.download_file(events, tmp_path / "tb" / Path(events).name)
    accumulator = EventAccumulator(str(tmp_path / "tb"))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train/empo/semantic_entropy")] == [1]


def test_a_hub_model_is_staged_from_the_hugging_face_cache(s3_env, tmp_path, monkeypatch):
    """The Hub path through huggingface_hub itself, offline: a model in the local cache (as a pod
    that downloaded it with HF_TOKEN has it) is staged like any other."""
    tiny = Path(model_source.resolve(model_source.BUNDLED_TINY))
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--empo-tests--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in tiny.iterdir():
        if f.is_file():
            (snapshot / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    spec = _spec("empo-tests/tiny", f"s3://{s3_env.new_bucket()}/runs", s3_env.endpoint)
    storage = open_run_storage(spec.storage, "research", "hub")
    staged, copied = model_staging.stage(spec, storage)
    assert copied and storage.read_json("model/empo-manifest.json")["source"] == "empo-tests/tiny"
    assert storage.read_bytes("model/config.json") == (tiny / "config.json").read_bytes()

    missing = _spec("empo-tests/absent", spec.storage.uri, s3_env.endpoint)
    with pytest.raises(model_source.ModelSourceError, match="not in the local Hugging Face cache"):
        model_staging.stage(missing, open_run_storage(spec.storage, "research", "absent"))
