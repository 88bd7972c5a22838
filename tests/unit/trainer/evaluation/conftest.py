"""Fixtures of the evaluation tests: one tiny-model sampler per session (loads in seconds)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    from empo_trainer.model_source import resolve

    return resolve("bundled:tiny-random")


@pytest.fixture(scope="session")
def tiny_sampler(tiny_model_path):
    from empo_trainer.sampling.transformers_backend import TransformersSampler

    return TransformersSampler(tiny_model_path, dtype="float32", max_prompt_length=192)
