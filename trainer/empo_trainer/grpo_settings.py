"""Spec -> GRPO settings: the batch geometry, the run's step count and the GRPOConfig arguments.

Pure functions of the spec, as TRL keeps `grpo_config.py` beside `grpo_trainer.py`: what an EmpoRun
means for TRL's GRPOTrainer (paper-era defaults live in the spec).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from empo_api.errors import SpecError
from empo_api.models import EmpoRunSpec


@dataclass(frozen=True)
class BatchGeometry:
    completions_per_step: int
    per_device_batch_size: int
    gradient_accumulation: int


def batch_geometry(spec: EmpoRunSpec) -> BatchGeometry:
    """promptsPerStep x G completions per optimizer step, split over learners and micro-batches."""
    try:
        return BatchGeometry(*spec.batch_geometry())
    except ValueError as exc:
        raise SpecError(f"spec.{exc}") from None


def total_steps(spec: EmpoRunSpec, num_prompts: int) -> int:
    """Optimizer steps of the run; a SpecError when the dataset cannot fill one generation."""
    a = spec.algorithm
    per_generation = a.prompts_per_step * a.updates_per_generation
    if num_prompts < per_generation:
        raise SpecError(
            f"spec.dataset has {num_prompts} prompts, fewer than one generation needs: algorithm.promptsPerStep x "
            f"algorithm.updatesPerGeneration = {a.prompts_per_step} x {a.updates_per_generation} = {per_generation}")
    if a.steps:
        return a.steps
    epochs = a.epochs or 2.0
    # each pass over a generation's completions is another updatesPerGeneration optimizer steps
    return max(1, math.ceil(num_prompts * epochs * a.passes_per_generation / a.prompts_per_step))


def grpo_config_kwargs(spec: EmpoRunSpec, output_dir: str, *, max_steps: int, use_cpu: bool) -> dict[str, Any]:
    """Pure: the GRPOConfig arguments an EmpoRun spec means (paper-era defaults live in the spec)."""
    a, learner = spec.algorithm, spec.learner
    geometry = batch_geometry(spec)
    precision = learner.precision if not use_cpu or learner.precision != "fp16" else "fp32"
    kwargs = dict(
        output_dir=output_dir,
        max_steps=max_steps,
        learning_rate=a.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        per_device_train_batch_size=geometry.per_device_batch_size,
        gradient_accumulation_steps=geometry.gradient_accumulation,
        num_generations=a.num_generations,
        max_completion_length=a.max_completion_length,
        temperature=a.temperature,
        top_p=a.top_p,
        beta=a.beta,
        loss_type=a.loss,
        importance_sampling_level=a.importance_sampling_level,
        epsilon=a.epsilon,
        epsilon_high=a.epsilon_high,
        # TRL counts micro-batches: a generation feeds updatesPerGeneration optimizer steps of
        # gradientAccumulation micro-batches each, passesPerGeneration times (1 and 1: paper-era EMPO)
        steps_per_generation=geometry.gradient_accumulation * a.updates_per_generation,
        num_iterations=a.passes_per_generation,
        scale_rewards="group",  # (r - mean) / (std + algorithm.advantageEpsilon) per group: grpo_trainer.EmpoGRPOTrainer
        shuffle_dataset=False,  # the data loader keeps our seeded order, so a resume replays it exactly
        seed=a.seed,
        data_seed=spec.dataset.shuffle_seed,
        bf16=precision == "bf16" and not use_cpu,
        fp16=precision == "fp16",
        use_cpu=use_cpu,
        gradient_checkpointing=learner.gradient_checkpointing,
        logging_steps=1,
        save_strategy="steps",
        save_steps=spec.storage.checkpoint_every,
        save_total_limit=1,  # local copies only; storage keeps spec.storage.keepLast
        save_only_model=False,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        log_completions=False,
        dataloader_num_workers=0,
        # truncated importance sampling against separate sampler engines (grpo_trainer.enable_sampler_correction):
        # per-token ratios capped at 2, as verl's TIS does
        vllm_importance_sampling_mode="token_truncate",
        vllm_importance_sampling_clip_max=2.0,
    )
    # FSDP2 when learner.sharding asks for it (it moves activation checkpointing into FSDP's config)
    from .distributed import fsdp_kwargs

    kwargs.update(fsdp_kwargs(spec))
    return kwargs
