"""Pure rules of the run layout: URIs, keys, LATEST pointers, manifests and retention."""

from __future__ import annotations

import pytest

from empo_trainer.storage import InvalidStorageURIError
from empo_trainer.storage.layout import (
    StorageLocation,
    clean_key,
    latest_bytes,
    parse_latest,
    parse_manifest,
    size_mismatches,
    step_dir,
    steps_to_delete,
)


@pytest.mark.parametrize(
    "uri, ns, name, expected",
    [
        ("s3://bucket/prefix", "ns", "run", "s3://bucket/prefix/ns/run"),
        ("s3://bucket/a/b/", "ns", "run", "s3://bucket/a/b/ns/run"),
        ("s3://bucket", "ns", "run", "s3://bucket/ns/run"),
        ("s3://my.bucket-1/x", "default", "r-2", "s3://my.bucket-1/x/default/r-2"),
    ],
)
def test_s3_run_root(uri, ns, name, expected):
    assert StorageLocation.parse(uri).run_root(ns, name).uri == expected


def test_local_run_root_is_absolute(tmp_path):
    assert StorageLocation.parse(str(tmp_path)).run_root("ns", "run").uri == str(tmp_path / "ns" / "run")


@pytest.mark.parametrize(
    "uri, ns, name, message",
    [
        ("s3://B/x", "ns", "run", "not a valid bucket name"),
        ("gs://bucket/x", "ns", "run", "allowed are s3://"),
        ("s3://bucket/x", "a/b", "run", "namespace 'a/b'"),
        ("s3://bucket/x", "ns", "..", "name '..'"),
        ("s3://bucket/x", "ns", "", "name ''"),
        ("s3://bucket/../../x", "ns", "run", "'..' segment"),
        ("s3://bucket//x", "ns", "run", "starts with '/'"),
        ("runs/../../x", "ns", "run", "'..' segment"),
    ],
)
def test_bad_locations_say_what_is_allowed(uri, ns, name, message):
    with pytest.raises(InvalidStorageURIError, match=message):
        StorageLocation.parse(uri).run_root(ns, name)


@pytest.mark.parametrize(
    "key, expected",
    [("a/b.json", "a/b.json"), ("checkpoints/", "checkpoints/"), ("eval/x.json", "eval/x.json")],
)
def test_clean_key(key, expected):
    assert clean_key(key) == expected


@pytest.mark.parametrize("key, words", [
    ("", "is empty"), ("/etc/passwd", "starts with '/'"), ("a/../../b", "'..' segment"), ("..", "'..' segment"),
    ("a/./b", "'.' segment"), ("a//b", "empty segment"), ("a\\..\\b", "backslash"), ("a/\x00b", "control character"),
])
def test_clean_key_refuses_keys_that_could_leave_the_run_folder(key, words):
    # refused, not normalised: S3 keeps '..' and '//' in keys literally, a local path would not
    with pytest.raises(InvalidStorageURIError, match=words):
        clean_key(key)


@pytest.mark.parametrize("step, name", [(0, "step-000000"), (120, "step-000120"), (1234567, "step-1234567")])
def test_step_dir_is_zero_padded(step, name):
    assert step_dir(step) == name


def test_latest_pointer_round_trip_and_garbage():
    assert parse_latest(latest_bytes(120, "ab" * 32), "u") == (120, "ab" * 32)
    for junk in (b"", b"step-000120", b'{"step": 1}', b"[]"):
        with pytest.raises(ValueError, match="LATEST is not a valid pointer"):
            parse_latest(junk, "u")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"{", "not JSON"),
        (b'{"format": "other"}', "not an empo-checkpoint/1 manifest"),
        (b'{"format": "empo-checkpoint/1", "files": []}', "lists no files"),
        (b'{"format": "empo-checkpoint/1", "files": [{"path": "a"}]}', "malformed manifest entry"),
        (b'{"format": "empo-checkpoint/1", "files": [{"path": "../a", "size": 1, "sha256": "x"}]}', "inside the run"),
    ],
)
def test_bad_manifests_are_refused(data, message):
    with pytest.raises(Exception, match=message):
        parse_manifest(data, "s3://b/m")


def test_size_mismatches_lists_missing_and_wrong_sizes():
    manifest = {"files": [{"path": "a", "size": 3}, {"path": "b", "size": 4}, {"path": "c", "size": 5}]}
    assert size_mismatches(manifest, {"a": 3, "b": 5, "extra": 1}) == ["b has 5 bytes, manifest says 4", "c is missing"]


@pytest.mark.parametrize(
    "committed, partial, latest, keep_last, scores, doomed",
    [
        ([10, 20, 30], [], 30, 3, None, []),
        ([10, 20, 30, 40], [], 40, 2, None, [10, 20]),
        ([10, 20, 30, 40], [], 40, 1, None, [10, 20, 30]),
        # best score kept besides the newest; ties keep the older step
        ([10, 20, 30, 40], [], 40, 1, {10: 0.2, 20: 0.9, 30: 0.9}, [10, 30]),
        # the newest is also the best: nothing extra kept
        ([10, 20], [], 20, 1, {10: 0.1, 20: 0.5}, [10]),
        # partial uploads older than latest go; newer ones (a commit in progress) stay
        ([10, 20], [15, 25], 20, 5, None, [15]),
        # committed checkpoints newer than LATEST (manifest written, LATEST not yet) are never touched
        ([10, 20, 30], [], 20, 1, None, [10]),
        # latest counts even if the scan missed its manifest (eventual listing)
        ([10], [], 20, 1, None, [10]),
    ],
)
def test_steps_to_delete(committed, partial, latest, keep_last, scores, doomed):
    assert steps_to_delete(committed, partial, latest, keep_last, scores) == doomed


def test_keep_last_must_be_positive():
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        steps_to_delete([1], [], 1, 0)


def test_storage_and_the_models_share_the_bucket_rule():
    """The trainer's storage once had a second, looser regex: 'a..b' passed there."""
    with pytest.raises(InvalidStorageURIError):
        StorageLocation.parse("s3://a..b/runs")
    loc = StorageLocation.parse("s3://bucket/runs/")
    assert (loc.scheme, loc.bucket, loc.prefix) == ("s3", "bucket", "runs")
