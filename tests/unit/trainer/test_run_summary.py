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


def test_an_actors_storage_error_is_one_line_without_rays_traceback():
    """An error raised in the learner reaches the driver wrapped in Ray's RayTaskError, whose text is
    the actor's traceback; `empo train` prints the actor's own message (a superseded writer, a store
    down past its window) and nothing else."""
    import pickle

    from ray.exceptions import RayTaskError

    from empo_trainer.driver import one_line, user_error
    from empo_trainer.storage import StorageError, SupersededError

    cause = pickle.loads(pickle.dumps(SupersededError("attempt 1 of s3://b/r was superseded by attempt 2", "s3://b/r")))
    traceback_text = "Traceback (most recent call last):\n" + '  File "actors.py", line 1, in train\n' * 40
    wrapped = RayTaskError("LearnerActor.train", traceback_text, cause).as_instanceof_cause()
    assert isinstance(wrapped, StorageError) and "File" in str(wrapped)  # what `except StorageError` caught
    assert user_error(wrapped) is wrapped.cause
    assert one_line(wrapped) == "attempt 1 of s3://b/r was superseded by attempt 2"
    assert one_line(ValueError("plain")) == "plain"
