"""The summary `empo train` prints at the end of a run."""

from __future__ import annotations

from empo_trainer.driver import RunSummary


def _summary(first_eval, final_eval) -> list[str]:
    return RunSummary("tiny", "default", "/runs/default/tiny", 3, 3, None, "/runs/default/tiny/checkpoints/step-000003",
                      final_eval, 12.0, first_eval=first_eval, last_record={"reward": 0.5, "semantic_entropy": 0.7}).lines()


def test_an_eval_only_at_the_end_is_printed_once():
    final = {"step": 3, "accuracy": {"arith-heldout": 0.25}}
    lines = _summary(dict(final), final)  # the queue hands the driver a copy of the same event
    evals = [line for line in lines if line.lstrip().startswith("eval:")]
    assert evals == ["  eval:       arith-heldout 0.250 at step 3"]


def test_base_and_final_eval_are_compared():
    lines = _summary({"step": 0, "accuracy": {"arith-heldout": 0.25, "gsm8k": 0.1}},
                     {"step": 24, "accuracy": {"arith-heldout": 0.75, "gsm8k": 0.2}})
    evals = [line for line in lines if line.lstrip().startswith("eval:")]
    assert evals == ["  eval:       arith-heldout 0.250 (step 0) -> 0.750, gsm8k 0.100 (step 0) -> 0.200 at step 24"]
