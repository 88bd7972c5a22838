"""Training prompts: fields, order, limits, formats and errors that name the spec field."""

import json

import pytest

from empo_api.models import DatasetSpec, PromptSpec
from empo_trainer.data import DatasetError, get_field, load_examples, to_examples


def test_dotted_fields_reach_nested_values():
    row = {"prompt": [{"content": "q?"}], "reward_model": {"ground_truth": ["42"]}}
    assert get_field(row, "prompt.0.content") == "q?"
    assert get_field(row, "reward_model.ground_truth") == ["42"]
    assert get_field(row, "prompt.3.content") is None


def test_examples_are_chat_prompts_with_monitoring_answers():
    rows = [{"q": f"question {i}", "a": float(i)} for i in range(10)]
    spec = DatasetSpec(uri="x.jsonl", question_field="q", answer_field="a", shuffle_seed=1, limit=4)
    out = to_examples(rows, spec, PromptSpec())
    assert len(out) == 4
    assert out[0]["prompt"][0]["role"] == "system" and "\\boxed{}" in out[0]["prompt"][0]["content"]
    assert out[0]["prompt"][1]["content"].startswith(out[0]["question"])
    assert out[0]["answer"] == out[0]["question"].split()[-1]  # 3.0 -> "3"
    again = to_examples(rows, spec, PromptSpec())
    assert [e["question"] for e in again] == [e["question"] for e in out]  # same seed, same order
    other = to_examples(rows, spec.model_copy(update={"shuffle_seed": 2}), PromptSpec())
    assert [e["question"] for e in other] != [e["question"] for e in out]


def test_wrong_question_field_names_the_field_and_what_exists():
    with pytest.raises(DatasetError, match=r"questionField 'problem'.*fields of the first row: a, q"):
        to_examples([{"q": "x", "a": 1}], DatasetSpec(uri="x.jsonl"), PromptSpec())


def test_reads_jsonl_and_parquet_from_the_repo(repo):
    jsonl = load_examples(DatasetSpec(uri=str(repo / "data/local/arith-train.jsonl"), question_field="question",
                                      answer_field="answer", limit=5), PromptSpec())
    assert len(jsonl) == 5 and all(e["answer"] for e in jsonl)
    parquet = load_examples(DatasetSpec(uri=str(repo / "data/math-train/NM_20K_1010.parquet"),
                                        question_field="prompt.0.content", limit=3), PromptSpec())
    assert len(parquet) == 3 and parquet[0]["answer"] is None


def test_missing_file_and_bad_json_name_the_uri(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_examples(DatasetSpec(uri=str(tmp_path / "nope.jsonl")), PromptSpec())
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "ok"}) + "\n{not json\n")
    with pytest.raises(DatasetError, match="line 2 is not JSON"):
        load_examples(DatasetSpec(uri=str(bad)), PromptSpec())
