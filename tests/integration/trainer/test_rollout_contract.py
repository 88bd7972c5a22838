"""TRL's rollout_func contract as the installed TRL keeps it, pinned with a real GRPOTrainer step:
its sampler passes every prompt G times in a row (its docstring says without duplication). How the
rollout engine answers such prompts, and refuses others, is tests/unit/trainer/test_rollout_engine.py."""

import pytest

from .test_grpo import _spec as _grpo_spec
from .test_grpo import _trainer as _grpo_trainer
from .test_grpo import tiny  # noqa: F401  (fixture)


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
