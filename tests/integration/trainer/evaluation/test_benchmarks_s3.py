"""A benchmark file read from S3 (real SeaweedFS); the benchmarks themselves are tests/unit/trainer/evaluation/."""

from __future__ import annotations

import json

from empo_trainer.evaluation.benchmarks import load_benchmark


def test_benchmark_from_s3(s3_env, monkeypatch):
    bucket = s3_env.new_bucket()
    rows = [{"question": "What is 2+3?", "answer": 5}, {"question": "What is 4*4?", "answer": 16.0}]
    s3_env.client().put_object(Bucket=bucket, Key="bench/arith.jsonl", Body="".join(json.dumps(r) + "\n" for r in rows).encode())
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    bench = load_benchmark(f"arith-heldout=s3://{bucket}/bench/arith.jsonl")
    assert [(i.question, i.gold) for i in bench.items] == [("What is 2+3?", ("5",)), ("What is 4*4?", ("16",))]
