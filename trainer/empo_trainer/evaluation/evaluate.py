"""Evaluate a policy on benchmarks: prompts -> the sampler (batched) -> grading -> metrics.

    report = evaluate(sampler, ["math500", "aime24"], spec.eval, spec.prompt)
    storage.write_json(f"eval/step-{step:06d}.json", report.to_json())
    status["lastEval"] = report.to_status(step, report_uri)

Generation goes only through the passed sampler, so the same function serves the CLI (a fresh
sampler), the training driver (its live sampler) and tests (the tiny model on CPU).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from empo_api.models import EvalSpec, PromptSpec

from ..sampling.base import Sampler, SamplingParams
from ..sampling.chat import build_messages
from .benchmarks import Benchmark, BenchmarkItem, load_benchmark
from .grading import AnswerMatcher, default_matcher, grade
from .metrics import (avg_at_k, cluster_answers, maj_at_k, majority_index, mean, pass_at_k, pass_k_values,
                      semantic_entropy)

REPORT_FORMAT = "empo-eval/1"


@dataclass
class ItemRecord:
    index: int
    question: str
    gold: list[str]
    completions: list[str]
    answers: list[str | None]
    correct: list[bool]
    clusters: list[int]
    completion_tokens: list[int]

    @property
    def semantic_entropy(self) -> float:
        return semantic_entropy(self.clusters)

    def to_json(self) -> dict[str, Any]:
        majority = majority_index(self.answers, self.clusters)
        return {
            "index": self.index, "question": self.question, "gold": self.gold,
            "completions": [{"text": t, "answer": a, "correct": c, "cluster": g, "tokens": n} for t, a, c, g, n in
                            zip(self.completions, self.answers, self.correct, self.clusters, self.completion_tokens)],
            "majorityAnswer": None if majority is None else self.answers[majority],
            "semanticEntropy": self.semantic_entropy,
        }


@dataclass
class BenchmarkResult:
    name: str
    metric: str  # what `accuracy` is: "greedy pass@1" or "avg@k"
    k: int
    records: list[ItemRecord] = field(default_factory=list)
    math_avg: bool = False
    source: str = ""

    @property
    def accuracy(self) -> float:
        return mean([avg_at_k(r.correct) for r in self.records]) or 0.0

    def metrics(self) -> dict[str, float]:
        """Every metric the samples support: pass@1 for greedy; avg@k, maj@k, pass@j for k samples."""
        if not self.records:
            return {}
        if self.k == 1:
            return {self.metric: self.accuracy}
        out = {f"avg@{self.k}": self.accuracy,
               f"maj@{self.k}": mean([float(maj_at_k(r.answers, r.correct, r.clusters)) for r in self.records])}
        for j in pass_k_values(self.k):
            out[f"pass@{j}"] = mean([pass_at_k(len(r.correct), sum(r.correct), j) for r in self.records])
        return out

    @property
    def mean_semantic_entropy(self) -> float | None:
        return mean([r.semantic_entropy for r in self.records]) if self.k > 1 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy, "metric": self.metric, "k": self.k, "count": len(self.records),
            "metrics": self.metrics(), "semanticEntropy": self.mean_semantic_entropy, "inMathAverage": self.math_avg,
            "source": self.source, "records": [r.to_json() for r in self.records],
        }


@dataclass
class EvalReport:
    benchmarks: dict[str, BenchmarkResult]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> dict[str, float]:
        return {name: b.accuracy for name, b in self.benchmarks.items()}

    @property
    def average(self) -> float | None:
        """Unweighted mean over the evaluated benchmarks."""
        return mean(list(self.accuracy.values()))

    @property
    def math_average(self) -> float | None:
        """The paper's "Avg": unweighted mean of its five math benchmarks, when all five were run."""
        five = [b.accuracy for b in self.benchmarks.values() if b.math_avg]
        return mean(five) if len(five) == 5 else None

    def to_json(self, step: int | None = None) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT, "step": step, "settings": self.settings,
            "accuracy": self.accuracy, "average": self.average, "mathAverage": self.math_average,
            "benchmarks": {name: b.to_json() for name, b in self.benchmarks.items()},
        }

    def to_status(self, step: int, report_uri: str | None = None) -> dict[str, Any]:
        """status.lastEval of the EmpoRun (camelCase, as EvalResult expects on the wire)."""
        status: dict[str, Any] = {"step": step, "accuracy": self.accuracy, "average": self.average}
        if report_uri:
            status["reportURI"] = report_uri
        return status

    def summary(self) -> str:
        """A plain-text table for terminals."""
        lines = [f"{'benchmark':<16} {'n':>5}  {'accuracy':>8}  metrics"]
        for name, b in self.benchmarks.items():
            extra = ", ".join(f"{k} {v:.3f}" for k, v in b.metrics().items())
            lines.append(f"{name:<16} {len(b.records):>5}  {b.accuracy:>8.3f}  {extra}")
        if self.average is not None:
            lines.append(f"{'average':<16} {'':>5}  {self.average:>8.3f}")
        if self.math_average is not None:
            lines.append(f"{'Avg (5 math)':<16} {'':>5}  {self.math_average:>8.3f}")
        return "\n".join(lines)


def sampling_params(eval_spec: EvalSpec, seed: int = 0) -> SamplingParams:
    """Greedy decoding gives one completion; sampling gives k at the spec's temperature."""
    if eval_spec.decoding == "greedy":
        return SamplingParams(n=1, temperature=0.0, max_new_tokens=eval_spec.max_new_tokens, seed=seed)
    return SamplingParams(n=eval_spec.k, temperature=eval_spec.temperature, top_p=1.0,
                          max_new_tokens=eval_spec.max_new_tokens, seed=seed)


def score_item(item: BenchmarkItem, texts: Sequence[str], token_counts: Sequence[int],
               matcher: AnswerMatcher) -> ItemRecord:
    """Pure given the matcher: completions of one question -> graded record with answer clusters."""
    grades = [grade(matcher, t, item.gold, item.kind) for t in texts]
    answers = [g.extracted for g in grades]
    return ItemRecord(
        index=item.index, question=item.question, gold=list(item.gold), completions=list(texts), answers=answers,
        correct=[g.correct for g in grades], clusters=cluster_answers(answers, matcher.equivalent),
        completion_tokens=list(token_counts),
    )


def evaluate(sampler: Sampler, benchmarks: list[str], eval_spec: EvalSpec, prompt: PromptSpec, *,
             progress: bool = True, matcher: AnswerMatcher | None = None, batch_size: int = 32,
             seed: int = 0) -> EvalReport:
    """Generate for every question of every benchmark (batched through the sampler) and grade."""
    matcher = matcher or default_matcher()
    params = sampling_params(eval_spec, seed)
    loaded: list[Benchmark] = [load_benchmark(b, eval_spec.limit) for b in benchmarks]
    total = sum(len(b.items) for b in loaded)
    bar = _progress_bar(total, progress)
    started, tokens = time.perf_counter(), 0
    results: dict[str, BenchmarkResult] = {}
    try:
        for bench in loaded:
            metric = "greedy pass@1" if params.greedy else f"avg@{params.n}"
            result = BenchmarkResult(bench.name, metric, params.n, math_avg=bench.definition.math_avg,
                                     source=bench.definition.source)
            for start in range(0, len(bench.items), batch_size):
                chunk = bench.items[start:start + batch_size]
                generations = sampler.generate([build_messages(i.question, prompt) for i in chunk], params)
                for item, gen in zip(chunk, generations):
                    result.records.append(score_item(item, gen.texts, [len(c) for c in gen.completion_ids], matcher))
                    tokens += gen.num_tokens
                if bar is not None:
                    bar.set_postfix_str(f"{bench.name} acc {result.accuracy:.3f}")
                    bar.update(len(chunk))
            results[bench.name] = result
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    settings = {
        "decoding": "greedy" if params.greedy else "sampling", "k": params.n, "temperature": params.temperature,
        "topP": params.top_p, "maxNewTokens": params.max_new_tokens, "limit": eval_spec.limit, "seed": seed,
        "system": prompt.system, "userTemplate": prompt.user_template,
        "benchmarkSources": {b.name: b.uri for b in loaded},
        "seconds": round(seconds, 3), "completionTokens": tokens,
        "tokensPerSecond": round(tokens / seconds, 2) if seconds > 0 else None,
    }
    return EvalReport(results, settings)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="eval", unit="q", file=sys.stderr, dynamic_ncols=True)
