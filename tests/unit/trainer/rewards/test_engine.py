"""The spec-driven engine, the baselines and the TRL adapter, called the way TRL 1.16 calls them."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from empo_trainer.rewards.engine import RewardEngine, gold_answer
from empo_trainer.rewards.trl_adapter import build_reward_function, completion_text

from .conftest import make_spec

GROUP = ["so \\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{\\dfrac12}", "\\boxed{3}", "I give up"]


def boxed(*answers):
    return [f"... \\boxed{{{a}}}" for a in answers]


@pytest.mark.parametrize("reward, expected", [
    ("empo", [0.6, 0.6, 0.6, 0.2, 0.0]),
    ("ttrl", [1.0, 1.0, 1.0, 0.0, 0.0]),
    ("format", [1.0, 1.0, 1.0, 1.0, 0.0]),
    ("gold", [0.0, 0.0, 0.0, 1.0, 0.0]),
])
def test_reward_kinds(math_eq, reward, expected):
    engine = RewardEngine(make_spec(reward=reward), math_eq)
    [result] = engine.score(["q"], [GROUP], golds=["\\boxed{3}"])
    assert result.rewards == pytest.approx(expected)
    assert result.cluster_ids == [0, 0, 0, 1, 2]


def test_random_baseline_is_seeded_and_binary(math_eq):
    a = RewardEngine(make_spec(reward="random", seed=7), math_eq).score(["q"] * 4, [GROUP] * 4)
    b = RewardEngine(make_spec(reward="random", seed=7), math_eq).score(["q"] * 4, [GROUP] * 4)
    rewards = [x for r in a for x in r.rewards]
    assert rewards == [x for r in b for x in r.rewards]
    assert set(rewards) == {0.0, 1.0}


def test_unanswered_option_and_fallbacks_come_from_the_spec(math_eq):
    group = ["\\boxed{4}", "\\boxed{4}", "The answer is 4.", "no idea"]
    [zero] = RewardEngine(make_spec(unanswered="zero"), math_eq).score(["q"], [group])
    [single] = RewardEngine(make_spec(unanswered="singleton"), math_eq).score(["q"], [group])
    [fallback] = RewardEngine(make_spec(answerFallbacks=True), math_eq).score(["q"], [group])
    assert zero.rewards == [0.5, 0.5, 0.0, 0.0]
    assert single.rewards == [0.5, 0.5, 0.25, 0.25]
    assert fallback.rewards == [0.75, 0.75, 0.75, 0.0]


def test_entropy_band_and_majority_floor_from_the_spec(math_eq):
    group = boxed(1, 1, 2, 3)
    [kept] = RewardEngine(make_spec(), math_eq).score(["q"], [group])
    [dropped] = RewardEngine(make_spec(entropyBand={"low": 0, "high": 0.5}), math_eq).score(["q"], [group])
    [floor] = RewardEngine(make_spec(minMajority=0.6), math_eq).score(["q"], [group])
    assert not kept.filtered and dropped.filtered and floor.filtered
    assert dropped.rewards == floor.rewards == [0.0] * 4


def test_gold_answer_forms():
    assert gold_answer(["\\left( 3, \\frac{\\pi}{2} \\right)"]) == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert gold_answer("The answer: \\boxed{\\text{B}}") == "B"
    assert gold_answer(None) is None and gold_answer([]) is None


class Recorder:
    def __init__(self):
        self.metrics, self.extra = {}, {}

    def log_metric(self, name, value):
        self.metrics[name] = value

    def log_extra(self, column, values):
        self.extra[column] = values


def test_trl_reward_function_with_chat_completions_and_columns(math_eq):
    spec = make_spec(numGenerations=4)
    fn = build_reward_function(spec, math_eq)
    prompts = [[{"role": "user", "content": "What is 1/2?"}]] * 4 + [[{"role": "user", "content": "2+2?"}]] * 4
    texts = boxed("0.5", "1/2", "\\frac12", "2") + boxed(1, 2, 3, 5)
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    rec = Recorder()
    rewards = fn(prompts=prompts, completions=completions, completion_ids=[[1]] * 8,
                 question=["What is 1/2?"] * 4 + ["2+2?"] * 4, answer=["\\frac{1}{2}"] * 4 + ["4"] * 4,
                 trainer_state=SimpleNamespace(global_step=12), log_metric=rec.log_metric, log_extra=rec.log_extra)
    assert rewards == [0.75, 0.75, 0.75, 0.25] + [0.0] * 4  # the second group is all distinct: filtered
    stats = fn.last_stats
    assert stats["step"] == 12
    assert stats["filtered_fraction"] == 0.5
    assert stats["label_accuracy"] == 0.5  # "0.5" is right; "1" (first of a tie) is not
    assert stats["majority_ratio"] == pytest.approx((0.75 + 0.25) / 2)
    assert stats["clusters_mean"] == 3.0 and stats["unanswered_fraction"] == 0.0
    assert rec.metrics["empo/semantic_entropy"] == pytest.approx(stats["semantic_entropy"])
    assert rec.extra["cluster"] == [0, 0, 0, 1, 0, 1, 2, 3]
    assert fn.__name__ == "empo_reward"


def test_trl_reward_function_without_gold_has_no_label_accuracy(math_eq):
    fn = build_reward_function(make_spec(numGenerations=2), math_eq)
    assert fn(prompts=["p", "p"], completions=boxed(1, 1)) == [1.0, 1.0]
    assert "label_accuracy" not in fn.last_stats


def test_completion_text():
    assert completion_text([{"role": "assistant", "content": "a"}]) == "a"
    assert completion_text("b") == "b"


def _cli(tmp_path, lines, *args):
    path = tmp_path / "completions.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return subprocess.run([sys.executable, "-m", "empo_cli", "rewards", "--input", str(path), *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_scores_a_file(tmp_path):
    proc = _cli(tmp_path, [
        {"prompt": "What is 1/2?", "completions": ["so \\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{2}", "none"],
         "answer": "\\frac12"},
        {"prompt": "q", "completions": boxed(1, 2, 3)},
    ], "--task", "math")
    assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(line) for line in proc.stdout.splitlines())
    assert first["answers"] == ["0.5", "\\frac{1}{2}", "2", None]
    assert first["cluster_ids"] == [0, 0, 1, 2] and first["rewards"] == [0.5, 0.5, 0.25, 0.0]
    assert first["majority_correct"] is True and first["filtered"] is False
    assert second["filtered"] is True and second["normalized_entropy"] == 1.0


def test_cli_reads_a_spec_file(tmp_path):
    manifest = tmp_path / "run.yaml"
    manifest.write_text("apiVersion: empo.dev/v1alpha1\nkind: EmpoRun\nmetadata: {name: r}\nspec:\n"
                        "  model: {source: x}\n  dataset: {uri: d.jsonl}\n  algorithm: {unanswered: singleton}\n")
    proc = _cli(tmp_path, [{"prompt": "q", "completions": boxed(1, 1) + ["none"]}], "--spec", str(manifest))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rewards"] == pytest.approx([2 / 3, 2 / 3, 1 / 3])


@pytest.mark.parametrize("lines, args, message", [
    ([{"prompt": "q", "completions": "not a list"}], [], "completions.jsonl:1: 'completions' must be a non-empty list"),
    ([{"prompt": "q", "completions": ["a"]}], ["--reward", "gold"], "record 1 has no 'answer'"),
])
def test_cli_errors_say_where(tmp_path, lines, args, message):
    proc = _cli(tmp_path, lines, *args)
    assert proc.returncode == 2 and message in proc.stderr


def test_cli_spec_errors_name_the_field(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: {source: x}\ndataset: {uri: d}\nalgorithm: {unanswered: maybe}\n")
    proc = _cli(tmp_path, [{"prompt": "q", "completions": ["a"]}], "--spec", str(spec))
    assert proc.returncode == 2 and "algorithm.unanswered" in proc.stderr


def test_truncated_completions_do_not_agree_on_a_restated_number(math_eq):
    """The CPU experiment's collapse: every sample restates the question and is cut off; the
    last-number fallback read the question's operand, all samples 'agreed', reward 1 each."""
    fn = build_reward_function(make_spec(numGenerations=4, answerFallbacks=True), math_eq)
    completions = ["To find 6 + 1, we can use the"] * 4
    rewards = fn(prompts=["What is 6 + 1?"] * 4, completions=completions, finished=[False] * 4)
    assert rewards == [0.0] * 4
    assert fn.last_stats["unanswered_fraction"] == 1.0
    finished = fn(prompts=["What is 6 + 1?"] * 4, completions=["6 + 1 = 7"] * 4, finished=[True] * 4)
    assert finished == [1.0] * 4
