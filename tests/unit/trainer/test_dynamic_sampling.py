"""Dynamic sampling (algorithm.filteredGroups: resample): groups outside the filter are replaced."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from empo_api.models import EmpoRunSpec
from empo_trainer.dynamic_sampling import GroupRefill, draw_indices, refill
from empo_trainer.rollout_engine import RolloutEngine, RolloutStats
from empo_trainer.trainer_callback import step_record
from empo_trainer.rewards.engine import RewardEngine
from empo_trainer.sampling.base import Generation


@pytest.mark.parametrize("batch, fresh, rounds, expected, replaced, used, left", [
    # lower-case entries pass the filter, upper-case ones do not
    (["a", "b"], [], 2, ["a", "b"], 0, 0, 0),                                   # nothing to replace
    (["a", "B", "c", "D"], [["e", "f"]], 2, ["a", "e", "c", "f"], 2, 1, 0),     # one round fills both
    (["A", "B"], [["C", "d"], ["e"]], 2, ["d", "e"], 2, 2, 0),                  # second round fills the rest
    (["A", "B"], [["C", "D"], ["E", "F"]], 2, ["A", "B"], 0, 2, 2),             # gives up: originals stay
    (["A", "b", "C"], [["d", "e"], ["x", "y"]], 1, ["d", "b", "e"], 2, 1, 0),
    (["A", "B", "C"], [["d", "E", "F"], ["g", "h"]], 1, ["d", "B", "C"], 1, 1, 2),  # round limit
])
def test_refill_replaces_rejected_entries_in_order(batch, fresh, rounds, expected, replaced, used, left):
    asked = []

    def sample(n, round_):
        asked.append(n)
        return fresh[round_][:n]

    result = refill(batch, lambda entries: [e.islower() for e in entries], sample, rounds)
    assert (result.batch, result.replaced, result.rounds, result.still_filtered) == (expected, replaced, used, left)
    if asked:  # each round asks for as many entries as slots are still missing
        assert asked[0] == sum(not e.islower() for e in batch)


def test_draws_are_reproducible_and_differ_by_step_and_round():
    first = draw_indices(100, 5, seed=42, step=3, round_=0, batch_digest="abc")
    assert first == draw_indices(100, 5, seed=42, step=3, round_=0, batch_digest="abc")  # a resume draws the same
    assert len(set(first)) == 5 and all(0 <= i < 100 for i in first)
    assert first != draw_indices(100, 5, seed=42, step=4, round_=0, batch_digest="abc")
    assert first != draw_indices(100, 5, seed=42, step=3, round_=1, batch_digest="abc")
    assert len(draw_indices(3, 5, 42, 0, 0, "")) == 3


def _spec(**algorithm) -> EmpoRunSpec:
    return EmpoRunSpec.model_validate({"model": {"source": "x"}, "dataset": {"uri": "d.jsonl", "answerField": "a"},
                                       "algorithm": {"numGenerations": 4, "promptsPerStep": 2, **algorithm}})


class ScriptedSampler:
    """A sampler whose answers are fixed per question: questions starting with 'hard' get four
    different answers (normalised entropy 1: outside the default band), the others agree."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append([p[-1]["content"] for p in prompts])
        out = []
        for p in prompts:
            question = p[-1]["content"]
            answers = ["1", "2", "3", "4"] if question.startswith("hard") else ["7", "7", "7", "8"]
            out.append(Generation(prompt_ids=[len(question)], completion_ids=[[1, 2]] * 4,
                                  texts=[f"\\boxed{{{a}}}" for a in answers], logprobs=[[-0.1, -0.1]] * 4,
                                  finished=[True] * 4))
        return out


def _row(question, answer):
    return {"prompt": [{"role": "user", "content": question}], "question": question, "answer": answer}


def test_rollout_replaces_filtered_groups_and_reports_the_fraction():
    spec = _spec(filteredGroups="resample", resampleRounds=2)
    examples = [_row("hard one", "1"), _row("easy one", "7"), _row("hard two", "2"), _row("easy two", "7"),
                _row("easy three", "7")]
    sampler = ScriptedSampler()
    engine = RolloutEngine(spec, local_sampler=sampler)
    engine.refill = GroupRefill(spec, examples, RewardEngine(spec))
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=5))  # all the rollout reads of TRL's trainer
    prompts = [examples[0]["prompt"]] * 4 + [examples[1]["prompt"]] * 4  # TRL repeats each prompt G times
    out = engine(prompts, trainer)
    # the hard group was replaced by an easy question drawn from the training set, with its own
    # prompt ids, question and gold answer; the kept easy group is untouched
    assert out["question"][4:] == ["easy one"] * 4 and out["answer"][4:] == ["7"] * 4
    replacement = out["question"][0]
    assert replacement.startswith("easy") and out["question"][:4] == [replacement] * 4
    assert out["prompt_ids"][0] == [len(replacement)]
    assert engine.stats.resampled_fraction == 0.5
    assert step_record(5, {}, {}, engine.stats, 1.0)["resampled_fraction"] == 0.5
    assert len(out["completion_ids"]) == 8 and len(sampler.calls) >= 2


def test_without_resampling_the_batch_and_columns_are_unchanged():
    spec = _spec()
    engine = RolloutEngine(spec, local_sampler=ScriptedSampler())
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=0))
    out = engine([_row("hard one", "1")["prompt"]] * 4, trainer)
    assert "question" not in out and engine.stats.resampled_fraction is None
    assert "resampled_fraction" not in step_record(0, {}, {}, RolloutStats(), 1.0)
