"""data/local: the training split and the arith-heldout benchmark are disjoint and reproducible."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest


@pytest.fixture(scope="module")
def split_module(repo):
    spec = importlib.util.spec_from_file_location("make_split", repo / "data/local/make_split.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_split_is_disjoint_sized_and_numeric(repo):
    train, heldout = _rows(repo / "data/local/arith-train.jsonl"), _rows(repo / "data/local/arith-heldout.jsonl")
    assert (len(train), len(heldout)) == (1500, 300)
    assert not {r["question"] for r in train} & {r["question"] for r in heldout}
    for row in train + heldout:
        assert row["question"].strip() and re.fullmatch(r"-?\d+(\.\d{1,2})?", row["answer"]), row
        assert not row["answer"].endswith(".0")


def test_files_are_what_the_script_makes(repo, split_module):
    train, heldout = split_module.build()
    assert _rows(repo / "data/local/arith-train.jsonl") == train
    assert _rows(repo / "data/local/arith-heldout.jsonl") == heldout
