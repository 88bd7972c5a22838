"""RunStorage on both backends: keys, JSON, files and metrics behave the same on a folder and on S3."""

from __future__ import annotations

import json
import math

import pytest

from empo_trainer.storage import InvalidStorageURIError, ObjectNotFoundError


def test_run_root_is_namespace_and_name_under_the_uri(run, backend_name, tmp_path):
    if backend_name == "s3":
        assert run.uri.startswith("s3://test-") and run.uri.endswith("/runs/team-a/run-1")
    else:
        assert run.uri == str((tmp_path / "store" / "team-a" / "run-1").resolve())
    assert run.uri_of("eval/step-000010.json") == run.uri + "/eval/step-000010.json"


def test_bytes_round_trip_list_and_delete(run):
    assert not run.exists("eval/a.json")
    run.write_bytes("eval/a.json", b"{}")
    run.write_bytes("eval/sub/b.json", b"[1]")
    run.write_bytes("report.html", b"<html></html>")
    assert run.read_bytes("eval/sub/b.json") == b"[1]"
    assert run.exists("eval/a.json")
    assert run.list("eval/") == ["eval/a.json", "eval/sub/b.json"]
    assert run.list() == ["eval/a.json", "eval/sub/b.json", "report.html"]
    run.delete("eval/a.json")
    assert not run.exists("eval/a.json")
    assert run.list("eval/") == ["eval/sub/b.json"]


def test_overwrite_replaces_whole_content(run):
    run.write_bytes("x.bin", b"long content here")
    run.write_bytes("x.bin", b"short")
    assert run.read_bytes("x.bin") == b"short"


def test_missing_key_raises_object_not_found_naming_the_uri(run):
    with pytest.raises(ObjectNotFoundError) as e:
        run.read_bytes("eval/nope.json")
    assert run.uri_of("eval/nope.json") in str(e.value)


@pytest.mark.parametrize("key", ["../escape", "/abs/key", "a/../../b", "", "a\\b"])
def test_keys_cannot_escape_the_run_folder(run, key):
    with pytest.raises(InvalidStorageURIError):
        run.write_bytes(key, b"x")


def test_write_json_and_upload_file(run, tmp_path):
    uri = run.write_json("eval/step-000010.json", {"math500": 0.5, "loss": math.nan})
    assert uri == run.uri_of("eval/step-000010.json")
    assert run.read_json("eval/step-000010.json") == {"math500": 0.5, "loss": None}
    src = tmp_path / "report.html"
    src.write_bytes(b"<h1>run</h1>" * 1000)
    run.upload_file("report.html", src)
    assert run.read_bytes("report.html") == src.read_bytes()
    out = run.download_file("report.html", tmp_path / "copy" / "r.html")
    assert out.read_bytes() == src.read_bytes()


def test_metrics_append_in_order_and_survive_reopening(open_run):
    first = open_run()
    for step in range(1, 4):
        first.append_metrics({"step": step, "reward/mean": step / 10, "entropy": math.inf})
    # A restarted driver (new process, new RunStorage) keeps appending to the same file.
    second = open_run()
    second.append_metrics({"step": 4, "reward/mean": 0.4})
    records = second.read_metrics()
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[0]["entropy"] is None
    lines = second.read_bytes("metrics.jsonl").decode().splitlines()
    assert all(json.loads(line) for line in lines) and len(lines) == 4


def test_read_metrics_of_a_new_run_is_empty(run):
    assert run.read_metrics() == []
