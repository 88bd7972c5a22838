"""Every benchmark definition loads its data and yields questions and gold answers."""

from __future__ import annotations

import json
import re

import pytest

from empo_trainer.evaluation.benchmarks import (BENCHMARKS, BenchmarkError, format_gold, load_benchmark,
                                                parse_benchmark_arg)

SHIPPED = [name for name, d in BENCHMARKS.items() if d.uri]
EXPECTED_COUNTS = {"math500": 500, "minerva_math": 272, "olympiadbench": 675, "aime24": 30, "amc23": 40,
                   "gsm8k": 1319, "svamp": 1000, "arith-heldout": 300}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_benchmark_yields_questions_and_gold(name):
    bench = load_benchmark(name, limit=5)
    assert len(bench.items) == 5
    for item in bench.items:
        assert len(item.question) > 10 and item.gold and all(g.strip() for g in item.gold)
        assert "{question}" not in item.question


@pytest.mark.parametrize("name, count", EXPECTED_COUNTS.items())
def test_full_benchmarks_have_the_published_sizes(name, count):
    assert len(load_benchmark(name).items) == count


@pytest.mark.parametrize("name", ["math500", "minerva_math", "olympiadbench", "aime24", "amc23"])
def test_math_questions_lose_the_built_in_instruction(name):
    # The run's prompt template adds its own; two spellings occur in the data (AIME's differs).
    for item in load_benchmark(name, limit=30).items:
        assert not re.search(r"think step by step", item.question), item.question[-120:]


def test_gold_answers_are_parsed_per_source():
    assert load_benchmark("gsm8k", limit=1).items[0].gold == ("18",)          # after '####'
    assert load_benchmark("asdiv", limit=1).items[0].gold == ("9",)           # '9 (apples)'
    svamp = load_benchmark("svamp", limit=1).items[0]
    assert svamp.gold == ("145",)                                             # 145.0
    assert svamp.question.startswith("There are 87 oranges") and svamp.question.endswith("How big is each group of bananas?")
    assert load_benchmark("math500", limit=1).items[0].gold == ("\\left( 3, \\frac{\\pi}{2} \\right)",)


@pytest.mark.parametrize("value, fmt, expected", [
    ("x\n#### 1,234", "after_hashes", "1234"), (43.0, "plain", "43"), (2.5, "plain", "2.5"),
    ("15 (balls)", "leading_number", "15"), ("3:30 p.m.", "leading_number", "3:30 p.m."), (None, "plain", None),
])
def test_format_gold(value, fmt, expected):
    assert format_gold(value, fmt) == expected


def test_multiple_choice_benchmarks_from_a_supplied_file(tmp_path):
    mmlu = tmp_path / "mmlu-pro.jsonl"
    mmlu.write_text(json.dumps({"question": "Which is a prime?", "options": ["4", "6", "7", "9"], "answer": "C",
                                "answer_index": 2}) + "\n")
    gpqa = tmp_path / "gpqa.jsonl"
    gpqa.write_text("".join(json.dumps({"Question": f"Q{i}?", "Correct Answer": "right", "Incorrect Answer 1": "w1",
                                        "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3"}) + "\n" for i in range(8)))
    item = load_benchmark(f"mmlu_pro={mmlu}").items[0]
    assert item.gold == ("C",) and "C. 7" in item.question and item.kind == "choice"
    items = load_benchmark(f"gpqa={gpqa}").items
    for it in items:  # the correct option sits at the gold letter after the shuffle
        assert f"{it.gold[0]}. right" in it.question
    assert len({it.gold[0] for it in items}) > 1  # shuffled, not always A
    assert [it.gold for it in items] == [it.gold for it in load_benchmark(f"gpqa={gpqa}").items]  # deterministic


def test_benchmarks_without_data_say_how_to_supply_it():
    with pytest.raises(BenchmarkError, match="gpqa=PATH"):
        parse_benchmark_arg("gpqa")
    with pytest.raises(BenchmarkError, match="unknown benchmark 'mathh500'.*math500"):
        parse_benchmark_arg("mathh500")
    with pytest.raises(BenchmarkError, match="no such file"):
        load_benchmark("math500=/nonexistent/file.jsonl")
