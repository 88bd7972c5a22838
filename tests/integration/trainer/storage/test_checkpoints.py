"""The checkpoint protocol on both backends: commit, LATEST, verification, download cache, retention."""

from __future__ import annotations

import json

import pytest

from empo_trainer.storage import CheckpointVerificationError

from .conftest import SMALL_CHECKPOINT, tree, write_checkpoint

BIG = {"model-00001-of-00002.safetensors": 6 * 2**20 + 123, "model-00002-of-00002.safetensors": 5 * 2**20, "config.json": 700}


def test_new_run_has_no_latest(run):
    assert run.checkpoints.latest() is None


def test_commit_then_latest_then_download_round_trips(run, tmp_path):
    src = write_checkpoint(tmp_path / "ck", seed=1, sizes=BIG)  # above the 5 MiB part size: multipart on S3
    uri = run.checkpoints.commit(10, src, score=0.25)
    assert uri == run.uri + "/checkpoints/step-000010"
    ref = run.checkpoints.latest()
    assert (ref.step, ref.uri, ref.score) == (10, uri, 0.25)
    assert sorted(ref.files) == sorted(BIG)
    out = run.checkpoints.download(ref, tmp_path / "dl")
    got = tree(out)
    assert got.pop("empo-manifest.json")
    assert got == tree(src)
    latest = json.loads(run.read_bytes("checkpoints/LATEST"))
    assert latest["checkpoint"] == "step-000010"


def test_latest_follows_the_newest_commit(run, tmp_path):
    run.checkpoints.commit(1, write_checkpoint(tmp_path / "a", 1, SMALL_CHECKPOINT))
    run.checkpoints.commit(2, write_checkpoint(tmp_path / "b", 2, SMALL_CHECKPOINT))
    ref = run.checkpoints.latest()
    assert ref.step == 2
    out = run.checkpoints.download(ref, tmp_path / "dl")
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_upload_without_manifest_and_latest_leaves_previous_checkpoint(run, tmp_path):
    """A writer that died after uploading files (before manifest and LATEST) changes nothing for readers."""
    run.checkpoints.commit(1, write_checkpoint(tmp_path / "a", 1, SMALL_CHECKPOINT))
    partial = write_checkpoint(tmp_path / "b", 2, SMALL_CHECKPOINT)
    run.backend.upload_files([(f"checkpoints/step-000002/{rel}", partial / rel) for rel in SMALL_CHECKPOINT])
    ref = run.checkpoints.latest()
    assert ref.step == 1
    assert run.checkpoints.steps() == [1]
    # The next commit of that step replaces the partial upload and becomes LATEST.
    run.checkpoints.commit(2, partial)
    assert run.checkpoints.latest().step == 2


def test_same_size_corruption_is_refused_on_download(run, tmp_path):
    src = write_checkpoint(tmp_path / "a", 1, SMALL_CHECKPOINT)
    run.checkpoints.commit(5, src)
    data = bytearray(run.read_bytes("checkpoints/step-000005/optimizer.pt"))
    data[1000] ^= 0xFF  # flip one byte: same size, different sha256
    run.write_bytes("checkpoints/step-000005/optimizer.pt", bytes(data))
    ref = run.checkpoints.latest()  # sizes still match the manifest
    with pytest.raises(CheckpointVerificationError) as e:
        run.checkpoints.download(ref, tmp_path / "dl")
    assert "optimizer.pt" in str(e.value) and ref.uri in str(e.value)
    assert not (tmp_path / "dl" / "optimizer.pt").exists()  # the bad copy is not left for a loader to pick up


def test_truncated_or_missing_file_fails_latest(run, tmp_path):
    run.checkpoints.commit(5, write_checkpoint(tmp_path / "a", 1, SMALL_CHECKPOINT))
    run.write_bytes("checkpoints/step-000005/model.safetensors", b"short")
    with pytest.raises(CheckpointVerificationError, match="model.safetensors has 5 bytes"):
        run.checkpoints.latest()
    run.delete("checkpoints/step-000005/model.safetensors")
    with pytest.raises(CheckpointVerificationError, match="model.safetensors is missing"):
        run.checkpoints.latest()


def test_tampered_manifest_fails_latest(run, tmp_path):
    run.checkpoints.commit(5, write_checkpoint(tmp_path / "a", 1, SMALL_CHECKPOINT))
    manifest = json.loads(run.read_bytes("checkpoints/step-000005/empo-manifest.json"))
    manifest["files"][0]["sha256"] = "0" * 64
    run.write_json("checkpoints/step-000005/empo-manifest.json", manifest)
    with pytest.raises(CheckpointVerificationError, match="does not match LATEST"):
        run.checkpoints.latest()


def test_download_reuses_a_valid_local_cache(run, tmp_path):
    src = write_checkpoint(tmp_path / "a", 1, SMALL_CHECKPOINT)
    run.checkpoints.commit(7, src)
    ref = run.checkpoints.latest()
    dest = run.checkpoints.download(ref, tmp_path / "cache")
    # With an object gone from storage, a second download can only succeed from the verified cache.
    run.delete("checkpoints/step-000007/optimizer.pt")
    run.checkpoints.download(ref, dest)
    # A damaged cached file is fetched again; the intact ones are still reused.
    (dest / "model.safetensors").write_bytes(b"garbage")
    run.checkpoints.download(ref, dest)
    got = tree(dest)
    got.pop("empo-manifest.json")
    assert got == tree(src)


def test_retention_keeps_last_n_after_each_commit(open_run, tmp_path):
    run = open_run(keep_last=2)
    for step in (10, 20, 30, 40):
        run.checkpoints.commit(step, write_checkpoint(tmp_path / str(step), step, {"w.bin": 1000}))
    assert run.checkpoints.steps() == [30, 40]
    assert not any(k.startswith("checkpoints/step-000010/") for k in run.list("checkpoints/"))
    assert run.checkpoints.latest().step == 40


def test_retention_keeps_the_best_score_when_asked(open_run, tmp_path):
    run = open_run(keep_last=1, keep_best=True)
    for step, score in ((10, 0.2), (20, 0.9), (30, 0.5), (40, None)):
        run.checkpoints.commit(step, write_checkpoint(tmp_path / str(step), step, {"w.bin": 100}), score=score)
    assert run.checkpoints.steps() == [20, 40]
    assert run.checkpoints.verify(20).score == 0.9


def test_retention_removes_stale_partial_uploads_but_not_newer_ones(run, tmp_path):
    folder = write_checkpoint(tmp_path / "a", 1, {"w.bin": 100})
    run.backend.upload_files([("checkpoints/step-000003/w.bin", folder / "w.bin")])  # died before its manifest
    run.backend.upload_files([("checkpoints/step-000009/w.bin", folder / "w.bin")])  # e.g. another writer, ahead
    run.checkpoints.commit(5, folder)
    keys = run.list("checkpoints/")
    assert not any("step-000003" in k for k in keys)
    assert "checkpoints/step-000009/w.bin" in keys


def test_reserved_manifest_name_and_empty_folder_are_rejected(run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        run.checkpoints.commit(1, empty)
    clash = write_checkpoint(tmp_path / "clash", 1, {"empo-manifest.json": 10})
    with pytest.raises(ValueError, match="reserved"):
        run.checkpoints.commit(1, clash)
    assert run.checkpoints.latest() is None
