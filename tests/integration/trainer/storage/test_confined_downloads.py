"""Downloads stay inside their cache folder, against real S3 servers: moto keeps '..' in keys
literally (as AWS does; SeaweedFS refuses such keys), so a bucket can list `m/../../escape.txt`.
Whatever the bucket lists, the source URI says or a staged model's manifest names, nothing is
written outside the cache, the error names the key, and it never shows a file from outside (nor its
hash)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from empo_trainer import model_source
from empo_trainer.storage import CheckpointVerificationError, open_run_storage
from empo_api.models import StorageSpec

from .conftest import write_checkpoint

HOSTNAME = Path("/etc/hostname")
OUTSIDE = "../" * 40 + "etc/hostname"  # far enough up to reach / from any cache folder


def _files(root: Path, skip: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*")
            if p.is_file() and not p.is_relative_to(skip)}


@pytest.fixture(autouse=True)
def _fresh_boto3_session(monkeypatch):
    # model_source uses boto3's default session, which keeps the credentials it first resolved; the
    # two servers here have different ones
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A cache folder deep inside a sandbox: a key climbing out of the cache lands in the sandbox,
    where the test sees it (and not in the machine's real folders)."""
    cache = tmp_path / "sandbox" / "a" / "b" / "c" / "d" / "e" / "cache"
    cache.mkdir(parents=True)
    monkeypatch.setenv("EMPO_CACHE_DIR", str(cache))
    return tmp_path / "sandbox", cache


@pytest.fixture(params=["moto", "seaweedfs"])
def server(request, monkeypatch):
    s = request.getfixturevalue("moto_env" if request.param == "moto" else "s3_env")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s.endpoint)
    return s


def _upload(client, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}{rel}", Body=data)


MODEL = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"weights" * 100}


def test_a_bucket_key_that_climbs_out_is_refused(moto_env, sandbox, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_env.endpoint)
    root, cache = sandbox
    bucket = moto_env.new_bucket()
    _upload(moto_env.client(), bucket, "models/evil/", {**MODEL, "../../../../../../../escape.txt": b"x"})
    before = _files(root, cache)
    with pytest.raises(model_source.ModelSourceError, match=r"object key '\.\./\.\..*escape\.txt' would be written "
                                                            "outside the model folder: it has a '..' segment"):
        model_source.resolve(f"s3://{bucket}/models/evil")
    assert _files(root, cache) == before
    assert not list(root.rglob("escape.txt"))


def test_a_source_that_climbs_out_is_refused_before_any_download(moto_env, sandbox, monkeypatch):
    """The audit's case: the download folder was built from the unnormalised prefix."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_env.endpoint)
    root, cache = sandbox
    bucket = moto_env.new_bucket()
    _upload(moto_env.client(), bucket, "../../../../trav-out/", MODEL)  # moto keeps the key as written
    before = _files(root, cache)
    with pytest.raises(model_source.ModelSourceError, match="the key after the bucket has a '..' segment"):
        model_source.resolve(f"s3://{bucket}/../../../../trav-out")
    assert _files(root, cache) == before
    assert not list(root.rglob("trav-out"))


@pytest.mark.parametrize("bad", ["../x", OUTSIDE, "/etc/hostname", "a/../../b"])
def test_a_staged_manifest_naming_files_outside_is_refused(server, sandbox, bad):
    root, cache = sandbox
    bucket = server.new_bucket()
    files = {rel: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for rel, data in MODEL.items()}
    files[bad] = {"size": 1, "sha256": "0" * 64}
    manifest = json.dumps({"source": "org/m", "revision": None, "files": files}).encode()
    _upload(server.client(), bucket, "runs/ns/run/model/", {**MODEL, "empo-manifest.json": manifest})
    before = _files(root, cache)
    with pytest.raises(model_source.ModelSourceError) as err:
        model_source.resolve(f"s3://{bucket}/runs/ns/run/model")
    message = str(err.value)
    assert "empo-manifest.json names the file" in message and repr(bad[:200]) in message, message
    assert _files(root, cache) == before
    if HOSTNAME.is_file():  # nothing of a file outside: neither its content nor its hash
        outside = HOSTNAME.read_bytes()
        assert outside.strip().decode(errors="replace") not in message or not outside.strip()
        assert hashlib.sha256(outside).hexdigest()[:16] not in message
    assert not list((cache / "models" / "staged").glob("*/config.json"))  # nothing published


def test_checkpoint_downloads_do_not_follow_a_symlink_out(tmp_path):
    run = open_run_storage(StorageSpec(uri=str(tmp_path / "store")), "team-a", "run-1")
    run.checkpoints.commit(1, write_checkpoint(tmp_path / "c1", seed=1, sizes={"sub/w.bin": 100}))
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (dest / "sub").symlink_to(tmp_path / "elsewhere")  # planted before the download
    with pytest.raises(CheckpointVerificationError, match="manifest path 'sub/w.bin' leads outside"):
        run.checkpoints.download(run.checkpoints.latest(), dest)
    assert not list((tmp_path / "elsewhere").iterdir())


@pytest.mark.parametrize("uri", ["s3://data-x/../../y.jsonl", "s3://data-x//y.jsonl", "s3://data-x/a\\b"])
def test_data_reads_refuse_keys_that_climb_out(uri):
    from empo_trainer import data_files

    with pytest.raises(data_files.SourceError, match="the key after the bucket"):
        data_files.read_bytes(uri)
