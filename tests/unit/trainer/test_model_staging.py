"""Which runs stage their model into the run's storage (staging itself, on SeaweedFS:
tests/integration/trainer/test_model_staging.py)."""

from __future__ import annotations

from empo_api.models import EmpoRunSpec
from empo_trainer import model_staging


def _spec(source: str, storage_uri: str, endpoint: str) -> EmpoRunSpec:
    return EmpoRunSpec.model_validate({"model": {"source": source}, "dataset": {"uri": "d.jsonl"},
                                       "storage": {"uri": storage_uri, "endpoint": endpoint}})


def test_only_hub_ids_and_s3_folders_are_staged_and_only_for_s3_storage():
    def staged(source, storage="s3://runs/x"):
        return model_staging.needs_staging(_spec(source, storage, "http://127.0.0.1:1"))

    assert staged("Qwen/Qwen2.5-Math-7B") and staged("s3://models/qwen")
    assert not staged("bundled:tiny-random") and not staged("./models/mine") and not staged("/models/mine")
    assert not staged("Qwen/Qwen2.5-Math-7B", storage="runs")  # one machine: its caches are shared anyway
