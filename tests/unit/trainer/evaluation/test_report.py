"""report.html renders from a stored run (a local folder): parses, embeds its plots, and plots the stored
numbers (from a run on S3: tests/integration/trainer/evaluation/test_report_s3.py)."""

from __future__ import annotations

import base64
import json
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from empo_api.models import StorageSpec
from empo_trainer.evaluation.report import write_report
from empo_trainer.storage import open_run_storage

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ReportParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.data_island = ""
        self._in_island = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))
        self._in_island = tag == "script" and attrs.get("id") == "empo-report-data"

    def handle_endtag(self, tag):
        self._in_island = False

    def handle_data(self, data):
        if self._in_island:
            self.data_island += data


def _metrics(step: int) -> dict:
    return {"step": step, "reward": 0.25 + 0.05 * step, "reward_std": 0.1, "semantic_entropy": 1.4 - 0.1 * step,
            "filtered_fraction": 0.5 / step, "completion_length": 40.0 + step, "tokens_per_second": 900.0 + step}


def _eval(step: int, acc: float) -> dict:
    record = {"index": 3, "question": "Tom has 2 apples </script><b>and</b> 3 pears. How many fruits?", "gold": ["5"],
              "completions": [{"text": "2+3 = \\boxed{5}", "answer": "5", "correct": True, "cluster": 0},
                              {"text": "\\boxed{6}", "answer": "6", "correct": False, "cluster": 1}]}
    return {"step": step, "accuracy": {"arith-heldout": acc, "gsm8k": acc / 2}, "average": 0.75 * acc,
            "benchmarks": {"arith-heldout": {"records": [record]}}}


@pytest.fixture
def stored_run(tmp_path):
    run = open_run_storage(StorageSpec(uri=str(tmp_path / "runs")), "team", "run-a")
    for step in range(1, 9):
        run.append_metrics(_metrics(step))
    run.write_json("eval/step-000000.json", _eval(0, 0.2))
    run.write_json("eval/step-000008.json", _eval(8, 0.4))
    run.write_bytes("samples.jsonl", (json.dumps({"step": 8, "question": "What is 7*6?", "completions": ["\\boxed{42}", "\\boxed{41}"],
                                                  "answers": ["42", "41"], "clusters": [0, 1], "rewards": [0.5, 0.5]}) + "\n").encode())
    return run


def _check_report(path: Path):
    text = path.read_text()
    parser = ReportParser()
    parser.feed(text)
    parser.close()
    assert parser.links == []  # self-contained: no external CSS, scripts or images
    assert len(parser.images) == 7
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    return text, json.loads(parser.data_island)


def test_report_plots_the_stored_metrics_and_evals(stored_run, tmp_path):
    out = write_report(stored_run, tmp_path / "out" / "report.html")
    text, data = _check_report(out)
    for key in ("reward", "semantic_entropy", "filtered_fraction", "completion_length", "tokens_per_second"):
        assert data["training"][key]["steps"] == list(range(1, 9))
        assert data["training"][key]["values"] == pytest.approx([_metrics(s)[key] for s in range(1, 9)])
    assert data["eval"] == {"steps": [0, 8], "accuracy": {"arith-heldout": [0.2, 0.4], "gsm8k": [0.1, 0.2]},
                            "average": pytest.approx([0.15, 0.3])}
    for name in ("reward", "semantic_entropy", "filtered_fraction", "completion_length", "tokens_per_second",
                 "eval_accuracy", "eval_by_benchmark"):
        png = (out.parent / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 5000, name
    assert "+20.0" in text  # arith-heldout 20% -> 40%, base against the last checkpoint
    assert "&lt;/script&gt;&lt;b&gt;and&lt;/b&gt;" in text  # question text is escaped, never markup
    assert "cluster 1" in text and "What is 7*6?" in text  # eval records and samples.jsonl with clusters
    assert not stored_run.exists("report.html")  # an explicit out path does not publish


def test_report_written_into_the_run_folder_by_default(stored_run):
    out = write_report(stored_run)
    assert out == Path(stored_run.uri) / "report.html" and (Path(stored_run.uri) / "plots" / "reward.png").is_file()
    _check_report(out)


def test_every_plot_is_shown_at_the_same_size(stored_run, tmp_path):
    """7 plots in a two-column layout used to leave "Accuracy per benchmark" alone on the last row,
    stretched to twice the width (four times the area) of the others."""
    text = write_report(stored_run, tmp_path / "report.html").read_text()
    sizes = re.findall(r'<img alt="([^"]+)" width="(\d+)" height="(\d+)" src="data:image/png;base64,([^"]+)"', text)
    assert len(sizes) == 7
    for name, width, height, b64 in sizes:
        png = base64.b64decode(b64)
        assert (int(width), int(height)) == struct.unpack(">II", png[16:24]) == (640, 360), name
    css = re.search(r"<style>(.*?)</style>", text, re.S).group(1)
    # no rule lets an image grow past its pixel size, and the plots sit in equal grid columns
    assert re.search(r"\.plots img\{max-width:100%;height:auto\}", css) and "width:100%}" not in css
    assert "grid-template-columns:repeat(auto-fill,minmax(480px,1fr))" in css and "flex:1" not in css


def test_report_of_an_empty_run_says_so(tmp_path):
    run = open_run_storage(StorageSpec(uri=str(tmp_path / "runs")), "team", "empty")
    text = write_report(run).read_text()
    assert "No metrics yet" in text and "No evaluation yet" in text
