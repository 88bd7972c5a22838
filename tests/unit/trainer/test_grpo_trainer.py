"""The spec's advantage epsilon, as EmpoGRPOTrainer applies it to TRL's centred rewards (pure torch;
the trainer itself, training, is tests/integration/trainer/test_grpo.py)."""

from __future__ import annotations

import pytest
import torch

from empo_trainer.grpo_trainer import scale_group_advantages


def _formula(rewards: list[float], group: int, eps: float) -> list[float]:
    out = []
    for start in range(0, len(rewards), group):
        r = torch.tensor(rewards[start:start + group], dtype=torch.float64)
        out += ((r - r.mean()) / (r.std() + eps)).tolist()  # unbiased std, as TRL
    return out


@pytest.mark.parametrize("rewards, group, eps", [
    ([1.0, 0.0, 0.5, 0.5], 4, 1e-4),                 # TRL's hard-coded value: same advantages as TRL
    ([1.0, 0.0, 0.5, 0.5], 4, 1e-6),                 # the verl-era value
    ([0.25, 0.25, 0.25, 0.75, 0.2, 0.2, 0.2, 0.2], 4, 1e-6),  # second group all equal: advantage 0
    ([3.0, 1.0, 2.0, 2.0, 0.0, 4.0], 3, 0.5),        # a large eps visibly shrinks advantages
])
def test_advantages_use_the_given_epsilon(rewards, group, eps):
    r = torch.tensor(rewards, dtype=torch.float64)
    centred = (r.view(-1, group) - r.view(-1, group).mean(dim=1, keepdim=True)).view(-1)  # TRL, scale_rewards none
    got = scale_group_advantages(centred, group, eps)
    assert got.tolist() == pytest.approx(_formula(rewards, group, eps), abs=1e-12)
