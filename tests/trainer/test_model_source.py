"""Model sources: bundled models offline, local folders, s3:// folders (real SeaweedFS), clear errors."""

from pathlib import Path

import pytest

from empo_trainer import model_source


def test_bundled_smollm2_loads_offline_from_its_wheel():
    path = model_source.resolve(model_source.BUNDLED_SMOLLM2)
    model = model_source.load_causal_lm(path)
    assert model.config.model_type == "llama" and 130e6 < model.num_parameters() < 140e6
    assert model_source.load_tokenizer(path).eos_token


def test_model_folder_from_s3_is_downloaded_once_into_the_cache(s3_env, monkeypatch, tmp_path):
    tiny = model_source.resolve(model_source.BUNDLED_TINY)  # resolved before the cache moves
    bucket = s3_env.new_bucket()
    client = s3_env.client()
    for f in sorted(p for p in Path(tiny).iterdir() if p.is_file()):
        client.upload_file(str(f), bucket, f"models/tiny/{f.name}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    monkeypatch.setenv("EMPO_CACHE_DIR", str(tmp_path / "cache"))

    path = model_source.resolve(f"s3://{bucket}/models/tiny")
    assert path.startswith(str(tmp_path / "cache"))
    assert model_source.load_causal_lm(path).num_parameters() == model_source.load_causal_lm(tiny).num_parameters()
    client.delete_object(Bucket=bucket, Key="models/tiny/config.json")
    assert model_source.resolve(f"s3://{bucket}/models/tiny") == path  # cached: no second download

    with pytest.raises(model_source.ModelSourceError, match="no objects under that prefix"):
        model_source.resolve(f"s3://{bucket}/models/absent")


@pytest.mark.parametrize("source, message", [
    ("bundled:gpt-5", "bundled models are"),
    ("./no/such/folder", "no such folder"),
])
def test_bad_sources_say_what_is_allowed(source, message):
    with pytest.raises(model_source.ModelSourceError, match=message):
        model_source.resolve(source)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(model_source.ModelSourceError, match="no config.json"):
        model_source.resolve(str(tmp_path))


@pytest.mark.parametrize("key", ["../escape.txt", "a/../../escape.txt", "/etc/cron.d/x", "a\\..\\x", "a/../config.json"])
def test_model_object_keys_cannot_leave_the_cache_folder(tmp_path, key):
    with pytest.raises(model_source.ModelSourceError, match="outside the model folder"):
        model_source.model_file(tmp_path, key, "s3://models/m")


def test_model_object_keys_land_inside_the_cache_folder(tmp_path):
    assert model_source.model_file(tmp_path, "tokenizer/vocab.json", "s3://b/m") == tmp_path / "tokenizer" / "vocab.json"
    assert model_source.model_file(tmp_path, "sub/", "s3://b/m") is None  # a folder marker
    (tmp_path / "link").symlink_to("/tmp")
    with pytest.raises(model_source.ModelSourceError, match="leaves the model folder"):
        model_source.model_file(tmp_path, "link/x", "s3://b/m")
