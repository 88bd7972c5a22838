"""Model sources: bundled models offline, local folders, clear errors (s3:// folders, on a real SeaweedFS:
tests/integration/trainer/test_model_source_s3.py)."""

import pytest

from empo_trainer import model_source


def test_bundled_smollm2_loads_offline_from_its_wheel():
    path = model_source.resolve(model_source.BUNDLED_SMOLLM2)
    model = model_source.load_causal_lm(path)
    assert model.config.model_type == "llama" and 130e6 < model.num_parameters() < 140e6
    assert model_source.load_tokenizer(path).eos_token


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
