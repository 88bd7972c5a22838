"""TRL's GRPOTrainer with the spec's advantage epsilon.

GRPO's advantage is (r - mean) / (std + eps) within each group of G samples. TRL 1.16 hard-codes
eps = 1e-4 (the paper-era TRL value); the verl-era code uses 1e-6, and the spec lets a run choose
(algorithm.advantageEpsilon). TRL has no option for it, so the subclass asks TRL for centred rewards
only (scale_rewards "none": A = r - mean, with TRL's own NaN handling and logging) and divides by
(std + eps) per group here. The std of r - mean within a group is the std of r, so the result is
exactly (r - mean) / (std + eps), with TRL's unbiased std.
"""

from __future__ import annotations

from typing import Any


def scale_group_advantages(centred: Any, group_size: int, eps: float) -> Any:
    """Centred rewards (r - group mean), G consecutive per group -> (r - mean) / (std + eps).

    std is the unbiased (Bessel-corrected) std of the group, as TRL computes it; a group whose
    rewards are all equal keeps advantage 0."""
    import torch

    # whole groups: the spec validator's check (EmpoRunSpec._split_batch), and GRPOConfig's own
    groups = centred.view(-1, group_size)
    std = groups.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(groups[:, :1])
    return (groups / (std + eps)).view_as(centred)


class _EngineSyncsItself:
    """Stands in for TRL's vLLM client: our RolloutEngine pushes weights to its own engines."""

    def sync_weights(self) -> None:
        pass


def enable_sampler_correction(trainer: Any) -> None:
    """Truncated importance sampling against the samplers' own log-probs, as TRL does for its vLLM.

    Samplers that are separate engines (vLLM, or a transformers actor) compute log-probs with other
    kernels, batch shapes and, between syncs, possibly other weights than the learner's. TRL then
    recomputes the learner's log-probs of the sampled tokens, weights each token's loss by
    min(pi_learner / pi_sampler, vllm_importance_sampling_clip_max) (the mode and cap GRPOConfig
    carries) and logs the mismatch as sampling/sampling_logp_difference/{mean,max} and
    sampling/importance_sampling_ratio/{min,mean,max}. TRL 1.16 gates all of it on `use_vllm`, which
    also makes it create its own vLLM; on the rollout_func path the trainer is built without it,
    and only the gate is turned on here (its weight-sync hook becomes a no-op)."""
    trainer.use_vllm = True
    trainer.vllm_generation = _EngineSyncsItself()
    trainer._last_loaded_step = -1


def peek_batch_samples(trainer: Any, epoch_iterator: Any, num_batches: int) -> list[Any]:
    """The optimizer step's micro-batches, as Trainer.get_batch_samples takes them, while reading
    one generation further ahead: when this step starts a generation, the prompts of the next one
    go to `trainer.next_generation_prompts` (None at the end of an epoch), for one-step-off.

    TRL's loader yields a whole generation's batch per micro-step, the same batch
    steps_per_generation x num_iterations times in a row; the micro-steps are counted by
    trainer._step, so the next generation starts that many micro-steps after this one."""
    from collections import deque

    if getattr(trainer, "_ahead", None) is None or trainer._ahead[0] is not epoch_iterator:
        trainer._ahead = (epoch_iterator, deque())  # a new epoch: what was read ahead was all taken
    ahead = trainer._ahead[1]
    every = trainer.args.steps_per_generation * trainer.num_iterations
    while len(ahead) < num_batches + every:
        try:
            ahead.append(next(epoch_iterator))
        except StopIteration:
            break
    batch = [ahead.popleft() for _ in range(min(num_batches, len(ahead)))]
    if trainer._step % every == 0:  # this step generates (TRL's _prepare_inputs)
        index = every - len(batch)  # the next generation's first micro-step, among those read ahead
        following = ahead[index] if 0 <= index < len(ahead) else None
        trainer.next_generation_prompts = None if following is None else [x["prompt"] for x in following]
    return batch


def trainer_class():
    """EmpoGRPOTrainer (built on first use: importing TRL takes seconds)."""
    global _trainer_class
    if _trainer_class is None:
        from trl import GRPOTrainer

        class EmpoGRPOTrainer(GRPOTrainer):
            def __init__(self, *args: Any, advantage_epsilon: float = 1e-4, sampler_correction: bool = False,
                         **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                if sampler_correction:
                    enable_sampler_correction(self)
                if self.args.scale_rewards != "group":
                    raise ValueError(f"EmpoGRPOTrainer scales advantages per group; got scale_rewards="
                                     f"{self.args.scale_rewards!r}")
                self.advantage_epsilon = advantage_epsilon
                self.scale_rewards = "none"  # TRL centres; _generate_and_score_completions scales
                self.lookahead = False  # one-step-off: read the next generation's prompts ahead
                self.next_generation_prompts = None
                self._ahead = None

            def get_batch_samples(self, epoch_iterator, num_batches, device):
                if not self.lookahead:
                    return super().get_batch_samples(epoch_iterator, num_batches, device)
                batch = peek_batch_samples(self, epoch_iterator, num_batches)
                return batch, self._get_num_items_in_batch(batch, device)

            def _generate_and_score_completions(self, inputs):
                output = super()._generate_and_score_completions(inputs)
                # training only: evaluation through TRL (num_generations_eval) is not used by EMPO
                if self.model.training:
                    output["advantages"] = scale_group_advantages(
                        output["advantages"], self.num_generations, self.advantage_epsilon)
                return output

        _trainer_class = EmpoGRPOTrainer
    return _trainer_class


_trainer_class = None
