"""Held-out evaluation (benchmarks, grading, pass@k / maj@k, `empo eval`) and run reports (`empo report`)."""

from .benchmarks import BENCHMARKS, BenchmarkDef, BenchmarkItem, load_benchmark
from .evaluate import BenchmarkResult, EvalReport, evaluate, sampling_params

__all__ = ["BENCHMARKS", "BenchmarkDef", "BenchmarkItem", "BenchmarkResult", "EvalReport", "evaluate",
           "load_benchmark", "sampling_params", "write_report"]


def __getattr__(name: str):
    if name == "write_report":  # matplotlib only when a report is written
        from .report import write_report

        return write_report
    raise AttributeError(name)
