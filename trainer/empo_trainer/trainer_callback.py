"""The learner's TrainerCallback: per-step metrics records, checkpoint commits, periodic evals.

`step_record` (pure) turns TRL's logs, the reward's own statistics and the rollout's timing into one
metrics.jsonl line; `make_callback` streams those lines to the driver, commits every HF Trainer
checkpoint through the storage layer and stops the run at a step's end when preemption asks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from .rollout_engine import RolloutEngine, RolloutStats


# TRL log keys -> metrics.jsonl keys (the report and the EmpoRun status read these names)
_RENAMES = {"reward": "reward", "reward_std": "reward_std", "completions/mean_length": "completion_length",
            "loss": "loss", "grad_norm": "grad_norm", "learning_rate": "learning_rate", "entropy": "token_entropy"}


# TRL log keys that belong to the optimizer step itself, not to the rollout it learned from
_UPDATE_KEYS = ("loss", "grad_norm", "learning_rate", "epoch", "step_time", "entropy", "kl", "clip_ratio",
                "cispo_clip_ratio")


def _is_update_key(key: str) -> bool:
    return key.split("/")[0] in _UPDATE_KEYS


def step_record(step: int, logs: dict[str, Any], reward_stats: dict[str, Any], rollout: RolloutStats,
                step_seconds: float) -> dict[str, Any]:
    """Pure: one metrics.jsonl line from TRL's logs, the reward's own stats and rollout timing."""
    record: dict[str, Any] = {"step": step}
    for key, value in logs.items():
        # the reward's figures arrive twice (TRL re-logs them as empo/*); keep the direct copy
        if isinstance(value, (int, float)) and not key.startswith("empo/"):
            record[_RENAMES.get(key, key)] = value
    record.update({k: v for k, v in reward_stats.items() if k != "step"})
    record["tokens_per_second"] = round(rollout.tokens_per_second, 3)
    record["generation_seconds"] = round(rollout.generation_seconds, 3)
    record["weight_sync_seconds"] = round(rollout.sync_seconds, 3)
    record["weight_sync_gib"] = round(rollout.sync_bytes / 2**30, 4)
    record["step_seconds"] = round(step_seconds, 3)
    record["completion_tokens"] = rollout.tokens
    record["batch_digest"] = rollout.batch_digest
    if rollout.resampled_fraction is not None:
        record["resampled_fraction"] = round(rollout.resampled_fraction, 4)
    if rollout.staleness is not None:  # engines of their own (sampler.maxStaleness)
        record["policy_version"] = rollout.policy_version
        record["staleness"] = rollout.staleness
        record["rollout_wait_seconds"] = round(rollout.wait_seconds, 3)
    return record


def make_callback(emit: Callable[[dict[str, Any]], None], reward_fn: Any, engine: RolloutEngine,
                  checkpoint_commit: Callable[[int, Path], str], evaluate: Callable[[int], dict | None] | None,
                  eval_every: int, should_stop: Callable[[], bool] | None = None):
    """A TrainerCallback that streams step records, commits checkpoints and runs periodic evals.
    When `should_stop()` says so at a step's end (on any rank: the ranks agree), that step is
    logged and checkpointed as usual and training stops there (`stopped_at`): a preemption."""
    from transformers import TrainerCallback

    class EmpoCallback(TrainerCallback):
        def __init__(self):
            self._step_start = time.perf_counter()
            self._rollout_logs: dict[str, Any] = {}
            self.stopped_at: int | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            # With periodic evals, the untrained policy is the baseline every later eval is read against.
            if evaluate and eval_every and state.global_step == 0:
                self._eval(0)

        def _eval(self, step):
            result = evaluate(step)
            if result is not None:
                emit({"type": "eval", "step": step, "result": result})

        def on_step_begin(self, args, state, control, **kwargs):
            self._step_start = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return  # the end-of-training summary log carries no step metrics
            # With updatesPerGeneration > 1 only the first step of a generation samples; the others
            # repeat that rollout's figures (new_rollout false) so every step has a complete line.
            new_rollout = "reward" in logs
            if new_rollout:
                self._rollout_logs = {k: v for k, v in logs.items() if not _is_update_key(k)}
            logs = {**self._rollout_logs, **logs}
            stats = dict(getattr(reward_fn, "last_stats", {}) or {})
            record = step_record(state.global_step, logs, stats, engine.stats, time.perf_counter() - self._step_start)
            record["new_rollout"] = new_rollout
            record["learner_processes"] = args.world_size
            emit({"type": "step", "record": record})

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            uri = checkpoint_commit(state.global_step, folder)
            emit({"type": "checkpoint", "step": state.global_step, "uri": uri})

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = True  # the final model is always checkpointed
            if should_stop is not None:
                from .preemption import agree

                if agree(should_stop(), args.device):  # every rank, every step: a collective when DP
                    # the step is logged (on_log) and committed (on_save, once even when
                    # checkpointEvery also hit it) before the trainer leaves its loop
                    self.stopped_at = state.global_step
                    control.should_save = True
                    control.should_training_stop = True
                    return  # no periodic eval inside the grace period: the checkpoint comes first
            if evaluate and eval_every and state.global_step % eval_every == 0 and state.global_step < state.max_steps:
                self._eval(state.global_step)

    return EmpoCallback()
