"""`empo rewards`: score completions offline with the EMPO reward (or a baseline).

Input: JSON lines {"prompt": str, "completions": [str, ...], "answer": optional gold}.
Output: one JSON line per prompt with the extracted answers, cluster ids, rewards, entropy and
whether the group filter dropped it (and, with a gold answer, whether the majority answer is right).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from empo_api.models import EmpoRunSpec, RewardKind, Task


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="JSON lines: {prompt, completions: [...], answer?}; - for stdin")
    parser.add_argument("--spec", help="an EmpoRun manifest (or its spec) whose algorithm settings to use")
    parser.add_argument("--task", choices=[t.value for t in Task], help="math or free-form (default: the spec's, else math)")
    parser.add_argument("--reward", choices=[r.value for r in RewardKind], help="override algorithm.reward")
    parser.add_argument("--clustering", choices=["math", "embedding", "judge"], help="override algorithm.clustering.method")


def load_spec(path: str | None, task: str | None, reward: str | None, clustering: str | None) -> EmpoRunSpec:
    """The spec of --spec (a manifest or a bare spec), or the defaults, with the command-line overrides."""
    data: dict[str, Any] = {"model": {"source": "unused"}, "dataset": {"uri": "unused"}}
    if path:
        from empo_api.manifest_yaml import load_yaml_documents

        docs = load_yaml_documents(Path(path).read_bytes())
        doc = docs[0] if len(docs) == 1 else None
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: expected one EmpoRun manifest or its spec (a mapping)")
        data = doc.get("spec", doc) if doc.get("kind") == "EmpoRun" or "spec" in doc else doc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: spec: expected a mapping, got {type(data).__name__}")
    data = json.loads(json.dumps(data))  # a private copy to apply the overrides to
    if task:
        data["task"] = task
    algorithm = data.setdefault("algorithm", {})
    if reward:
        algorithm["reward"] = reward
    if clustering:
        algorithm.setdefault("clustering", {})["method"] = clustering
    if algorithm.get("reward") == "gold":
        data.setdefault("dataset", {}).setdefault("answerField", "answer")
    return EmpoRunSpec.model_validate(data)


def _records(stream, name: str):
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc.msg})") from None
        except RecursionError:
            raise ValueError(f"{where}: JSON nested too deeply") from None
        completions = record.get("completions") if isinstance(record, dict) else None
        if not isinstance(completions, list) or not completions or not all(isinstance(c, str) for c in completions):
            raise ValueError(f"{where}: 'completions' must be a non-empty list of strings")
        if not isinstance(record.get("prompt", ""), str):
            raise ValueError(f"{where}: 'prompt' must be a string")
        yield record


def run(args: argparse.Namespace) -> int:
    from .engine import RewardEngine

    try:
        spec = load_spec(args.spec, args.task, args.reward, args.clustering)
    except ValidationError as exc:
        from empo_api.validate import model_errors

        for err in model_errors(exc):
            print(f"error: {args.spec or 'spec'}: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine = RewardEngine(spec)
    stream = sys.stdin if args.input == "-" else None
    try:
        with (open(args.input) if stream is None else stream) as fh:
            records = list(_records(fh, args.input))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    golds = [r.get("answer") for r in records]
    has_gold = any(g is not None for g in golds)
    if spec.algorithm.reward == "gold" and not all(g is not None for g in golds):
        missing = next(i for i, g in enumerate(golds) if g is None) + 1
        print(f"error: {args.input}: record {missing} has no 'answer', which reward gold needs", file=sys.stderr)
        return 2
    questions = [r.get("prompt", "") for r in records]
    results = engine.score(questions, [r["completions"] for r in records], golds if has_gold else None)
    correct = engine.label_correct(results, golds, questions) if has_gold else [None] * len(results)
    for record, result, ok in zip(records, results, correct):
        out = {"prompt": record.get("prompt", ""), **result.to_json()}
        if ok is not None:
            out["majority_correct"] = ok
        print(json.dumps(out, ensure_ascii=False))
    return 0
