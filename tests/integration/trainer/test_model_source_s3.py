"""A model folder from s3:// (real SeaweedFS); the other model sources are tests/unit/trainer/test_model_source.py."""

from pathlib import Path

import pytest

from empo_trainer import model_source


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
