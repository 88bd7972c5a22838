"""TRL's rollout_func contract as TRL 1.16 keeps it: its sampler passes every prompt G times in a
row (its docstring says without duplication) and takes a completion per copy back. The rollout
engine samples each prompt once with n=G, and refuses prompts that are not such copies instead of
grouping the wrong prompts."""

from types import SimpleNamespace

import pytest

from empo_api.models import EmpoRunSpec
from empo_trainer.rollout_engine import RolloutEngine
from empo_trainer.sampling import Generation

from .test_grpo import _spec as _grpo_spec
from .test_grpo import _trainer as _grpo_trainer
from .test_grpo import tiny  # noqa: F401  (fixture)

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


@pytest.mark.slow
def test_trl_passes_what_the_engine_expects(tiny, tmp_path):  # noqa: F811
    """Pins the installed TRL: a real GRPOTrainer step hands our rollout function G copies of each
    prompt in a row, as many as the generation's completions on this process."""
    spec = _grpo_spec(numGenerations=4, promptsPerStep=2)
    trainer, _, _ = _grpo_trainer(tiny, tmp_path, spec, 1, [1.0, 0.0])
    seen = []
    original = trainer.rollout_func

    def recording(prompts, trainer_):
        seen.append(list(prompts))
        return original(prompts, trainer_)

    trainer.rollout_func = recording
    trainer.train()
    prompts = seen[0]
    args = trainer.args
    assert len(prompts) == args.per_device_train_batch_size * args.steps_per_generation == 8
    assert all(prompts[i] == prompts[i - i % 4] for i in range(8)) and prompts[0] != prompts[4]
    from empo_trainer.rollout_engine import _one_per_group

    assert _one_per_group(prompts, 4) == [prompts[0], prompts[4]]
