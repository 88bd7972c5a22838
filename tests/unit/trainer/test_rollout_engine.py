"""The rollout engine as TRL's rollout_func: TRL 1.16's sampler passes every prompt G times in a
row and takes a completion per copy back. The engine samples each prompt once with n=G, and refuses
prompts that are not such copies instead of grouping the wrong prompts (that the installed TRL passes
such copies: tests/integration/trainer/test_rollout_contract.py)."""

from types import SimpleNamespace

import pytest

from empo_api.models import EmpoRunSpec
from empo_trainer.rollout_engine import RolloutEngine
from empo_trainer.sampling import Generation

G = 2


def _spec():
    return EmpoRunSpec.model_validate({
        "model": {"source": "bundled:tiny-random"}, "dataset": {"uri": "x.jsonl"},
        "algorithm": {"numGenerations": G, "promptsPerStep": 2, "maxCompletionLength": 4},
        "sampler": {"backend": "transformers", "replicas": 0}})


class Echo:
    """Prompt ids name the prompt, so the output shows which prompt each completion belongs to."""

    def generate(self, prompts, params):
        return [Generation([ord(p[0])], [[7]] * params.n, ["x"] * params.n, [[-0.1]] * params.n,
                           [True] * params.n) for p in prompts]


def _trainer():
    return SimpleNamespace(state=SimpleNamespace(global_step=0), args=None)


def _owners(out):
    return [chr(ids[0]) for ids in out["prompt_ids"]]


def test_g_copies_in_a_row_are_one_group_each():
    # what TRL 1.16 passes
    out = RolloutEngine(_spec(), local_sampler=Echo())(["A", "A", "B", "B"], _trainer())
    assert _owners(out) == ["A", "A", "B", "B"]


def test_distinct_prompts_where_copies_were_expected_fail_loudly():
    # before: every G-th prompt was kept and the others silently dropped (A, C trained; B, D lost)
    with pytest.raises(RuntimeError, match="not numGenerations=2 copies"):
        RolloutEngine(_spec(), local_sampler=Echo())(["A", "B", "C", "D"], _trainer())
