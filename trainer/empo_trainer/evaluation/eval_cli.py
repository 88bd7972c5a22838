"""`empo eval`: evaluate a model on benchmarks and write a results JSON.

    empo eval --model bundled:smollm2-135m-instruct --benchmarks arith-heldout --limit 32
    empo eval --model s3://bucket/runs/ns/run/checkpoints/step-000400 --benchmarks math500,aime24 \\
        --k 8 --temperature 0.6 --out results.json

Imports torch and the sampler only in run(), so `empo --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from empo_api.cli_errors import positive_int
from empo_api.models import PAPER_MATH_BENCHMARKS, EvalSpec, PromptSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a local folder, an s3:// model folder, a Hugging Face id (offline cache) or bundled:NAME")
    parser.add_argument("--benchmarks", default=",".join(PAPER_MATH_BENCHMARKS),
                        help="comma-separated names (math500, minerva_math, olympiadbench, aime24, amc23, gsm8k, svamp, "
                             "asdiv, mawps, arith-heldout, mmlu_pro=PATH, gpqa=PATH); NAME=URI reads NAME from URI. "
                             "Default: the paper's five")
    parser.add_argument("--limit", type=int, default=None, help="at most N questions per benchmark")
    parser.add_argument("--k", type=int, default=1, help="samples per question; k > 1 samples (avg@k, maj@k, pass@k)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature (default 0 = greedy for k = 1, 0.6 for k > 1)")
    parser.add_argument("--max-new-tokens", type=int, default=3000, help="generation budget per answer")
    parser.add_argument("--max-prompt-length", type=positive_int, default=1024, help="prompt tokens kept (from the end)")
    parser.add_argument("--backend", choices=["auto", "transformers", "vllm"], default="auto",
                        help="sampler backend; auto: vLLM when a GPU and vllm are present, else transformers")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"], help="weights dtype (auto: bfloat16 on GPU, float32 on CPU)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="questions per generate() call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--system", default=None, help="system prompt (default: the EMPO paper's; '' for none)")
    parser.add_argument("--user-template", default=None, help="user template with {question} (default: the paper's)")
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    parser.add_argument("--answer-fallbacks", action="store_true",
                        help="also accept 'The answer is X' / the last number (as algorithm.answerFallbacks trains)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_eval_spec(args: argparse.Namespace) -> EvalSpec:
    """CLI flags -> EvalSpec: k > 1 or a positive temperature means sampling."""
    temperature = args.temperature if args.temperature is not None else (0.6 if args.k > 1 else 0.0)
    sampling = args.k > 1 or temperature > 0
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    return EvalSpec(benchmarks=benchmarks, decoding="sampling" if sampling else "greedy", k=args.k,
                    temperature=temperature if sampling else 0.6, limit=args.limit, max_new_tokens=args.max_new_tokens)


def build_prompt_spec(args: argparse.Namespace) -> PromptSpec:
    overrides = {}
    if args.system is not None:
        overrides["system"] = args.system or None
    if args.user_template is not None:
        overrides["user_template"] = args.user_template
    return PromptSpec(**overrides)


def make_eval_sampler(model_path: str, backend: str, dtype: str, max_prompt_length: int, max_new_tokens: int):
    import torch

    if backend == "auto":
        import importlib.util

        backend = "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "transformers"
    if dtype == "auto":
        dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    if backend == "vllm":
        from ..sampling.vllm_backend import VLLMSampler

        return VLLMSampler(model_path, dtype=dtype, max_prompt_length=max_prompt_length,
                           max_model_len=max_prompt_length + max_new_tokens, gpu_memory_utilization=0.85)
    from ..sampling.transformers_backend import TransformersSampler

    return TransformersSampler(model_path, dtype=dtype, max_prompt_length=max_prompt_length)


def _check_writable(path: Path) -> None:
    import errno
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise PermissionError(errno.EACCES, "not writable")


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..model_source import ModelSourceError, resolve
    from .benchmarks import BenchmarkError, parse_benchmark_arg
    from .evaluate import evaluate
    from .grading import default_matcher

    try:
        eval_spec, prompt = build_eval_spec(args), build_prompt_spec(args)
        for b in eval_spec.benchmarks:  # fail on a typo before loading a model
            parse_benchmark_arg(b)
        model_path = resolve(args.model)
        if args.out:  # find an unwritable --out now, not after the whole evaluation
            _check_writable(args.out)
    except OSError as exc:
        print(f"empo eval: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (ValidationError, BenchmarkError, ModelSourceError) as exc:
        print(f"empo eval: {exc}", file=sys.stderr)
        return 2
    sampler = make_eval_sampler(model_path, args.backend, args.dtype, args.max_prompt_length, args.max_new_tokens)
    try:
        report = evaluate(sampler, eval_spec.benchmarks, eval_spec, prompt, progress=not args.no_progress,
                          batch_size=args.batch_size, seed=args.seed,
                          matcher=default_matcher(fallbacks=args.answer_fallbacks))
    except BenchmarkError as exc:
        print(f"empo eval: {exc}", file=sys.stderr)
        return 2
    report.settings["model"] = args.model
    print(report.summary())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report.to_json(), indent=1) + "\n")
        print(f"results: {args.out}")
    return 0
