"""evaluate(): generation through a real sampler, grading, metrics, and the shapes the driver stores."""

from __future__ import annotations

import json

import pytest

from empo_api.models import EvalResult, EvalSpec, PromptSpec
from empo_trainer.evaluation import EvalReport, evaluate, load_benchmark
from empo_trainer.sampling.base import Generation, SamplingParams


def test_whole_path_through_the_transformers_sampler(tiny_sampler):
    spec = EvalSpec(benchmarks=["arith-heldout", "aime24"], limit=3, max_new_tokens=6)
    report = evaluate(tiny_sampler, spec.benchmarks, spec, PromptSpec(), progress=False, batch_size=2)
    assert list(report.benchmarks) == ["arith-heldout", "aime24"]
    heldout = report.benchmarks["arith-heldout"]
    assert heldout.metric == "greedy pass@1" and len(heldout.records) == 3
    questions = [i.question for i in load_benchmark("arith-heldout", limit=3).items]
    assert [r.question for r in heldout.records] == questions
    for record in heldout.records:
        assert len(record.completions) == 1 and isinstance(record.completions[0], str)
        assert 1 <= record.completion_tokens[0] <= 6  # the budget holds
        assert record.answers == [None] and record.correct == [False]  # random weights write no \boxed{}
    # Greedy decoding is deterministic: the same completions a second time.
    again = evaluate(tiny_sampler, ["arith-heldout"], spec, PromptSpec(), progress=False)
    assert [r.completions for r in again.benchmarks["arith-heldout"].records] == [r.completions for r in heldout.records]
    assert report.settings["completionTokens"] == sum(
        t for b in report.benchmarks.values() for r in b.records for t in r.completion_tokens)


def test_sampling_k_completions_with_the_tiny_model(tiny_sampler):
    spec = EvalSpec(decoding="sampling", k=4, temperature=1.0, limit=2, max_new_tokens=4)
    report = evaluate(tiny_sampler, ["gsm8k"], spec, PromptSpec(), progress=False)
    result = report.benchmarks["gsm8k"]
    assert result.metric == "avg@4" and all(len(r.completions) == 4 for r in result.records)
    assert set(result.metrics()) == {"avg@4", "maj@4", "pass@1", "pass@2", "pass@4"}
    # Random text has no \boxed{} answer: 4 singleton clusters, entropy ln 4.
    assert result.mean_semantic_entropy == pytest.approx(1.3862943611198906)


class ScriptedSampler:
    """A Sampler whose completions are fixed texts: checks grading and metrics end to end."""

    def __init__(self, texts_by_question: dict[str, list[str]]):
        self.texts_by_question = texts_by_question
        self.calls: list[tuple[int, SamplingParams]] = []

    def generate(self, prompts, params):
        self.calls.append((len(prompts), params))
        out = []
        for messages in prompts:
            question = next(q for q in self.texts_by_question if q in messages[-1]["content"])
            texts = self.texts_by_question[question][: params.n]
            out.append(Generation(prompt_ids=[1], completion_ids=[[7] * 3 for _ in texts], texts=texts))
        return out

    def load_weights(self, state_dict):
        pass


def test_metrics_and_status_from_known_completions():
    items = load_benchmark("arith-heldout", limit=3).items
    gold = [i.gold[0] for i in items]
    texts = {
        items[0].question: [f"\\boxed{{{gold[0]}}}"] * 3 + ["\\boxed{-1}"],          # 3/4 right, majority right
        items[1].question: ["\\boxed{-1}", "\\boxed{-1}", f"\\boxed{{{gold[1]}}}", "no answer"],  # 1/4, majority wrong
        items[2].question: ["\\boxed{-2}"] * 4,                                          # all wrong
    }
    sampler = ScriptedSampler(texts)
    spec = EvalSpec(decoding="sampling", k=4, temperature=0.7, limit=3, max_new_tokens=32)
    report = evaluate(sampler, ["arith-heldout"], spec, PromptSpec(), progress=False, batch_size=2)
    assert [n for n, _ in sampler.calls] == [2, 1]  # batched
    assert sampler.calls[0][1] == SamplingParams(n=4, temperature=0.7, top_p=1.0, max_new_tokens=32, seed=0)
    result = report.benchmarks["arith-heldout"]
    metrics = result.metrics()
    assert metrics["avg@4"] == pytest.approx((3 / 4 + 1 / 4 + 0) / 3)
    assert metrics["maj@4"] == pytest.approx(1 / 3)
    assert metrics["pass@1"] == pytest.approx(metrics["avg@4"])
    assert metrics["pass@4"] == pytest.approx(2 / 3)
    assert metrics["pass@2"] == pytest.approx((1 + 1 / 2 + 0) / 3)  # 1-C(1,2)/C(4,2)=1, 1-C(3,2)/C(4,2)=1/2
    assert result.records[0].clusters == [0, 0, 0, 1] and result.records[1].clusters == [0, 0, 1, 2]

    status = report.to_status(12, "s3://bucket/runs/ns/run/report.html")
    assert status == {"step": 12, "accuracy": {"arith-heldout": pytest.approx(1 / 3)},
                      "average": pytest.approx(1 / 3), "reportURI": "s3://bucket/runs/ns/run/report.html"}
    EvalResult.model_validate(status)  # the EmpoRun status model accepts it as is

    data = json.loads(json.dumps(report.to_json(step=12)))  # JSON-serialisable
    assert data["step"] == 12 and data["accuracy"] == status["accuracy"]
    first = data["benchmarks"]["arith-heldout"]["records"][0]
    assert first["majorityAnswer"] == gold[0] and first["completions"][3] == {
        "text": "\\boxed{-1}", "answer": "-1", "correct": False, "cluster": 1, "tokens": 3}


def test_paper_average_needs_all_five_math_benchmarks():
    items = {name: load_benchmark(name, limit=2).items for name in ["math500", "minerva_math", "olympiadbench", "aime24", "amc23"]}
    # Right on the first question of each benchmark, wrong on the second.
    texts = {}
    for bench_items in items.values():
        texts[bench_items[0].question] = [f"\\boxed{{{bench_items[0].gold[0]}}}"]
        texts[bench_items[1].question] = ["\\boxed{no}"]
    spec = EvalSpec(limit=2, max_new_tokens=8)
    report = evaluate(ScriptedSampler(texts), list(items), spec, PromptSpec(), progress=False)
    assert report.accuracy == {name: 0.5 for name in items}
    assert report.math_average == pytest.approx(0.5) and report.average == pytest.approx(0.5)
    partial = EvalReport({k: v for k, v in report.benchmarks.items() if k != "aime24"})
    assert partial.math_average is None and partial.average == pytest.approx(0.5)
