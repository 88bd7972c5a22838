"""Fixtures of the storage tests: one run folder per test, on each backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from empo_api.models import StorageSpec
from empo_trainer.storage import RunStorage, S3Options, open_run_storage

# Small parts so multi-part uploads happen with test-sized files (5 MiB is S3's minimum part size).
SMALL_PARTS = S3Options(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20, max_concurrency=4, max_attempts=3)


def s3_spec(server, bucket: str, prefix: str = "runs", **extra) -> StorageSpec:
    return StorageSpec(uri=f"s3://{bucket}/{prefix}", endpoint=server.endpoint, region=server.region, **extra)


@pytest.fixture(params=["local", "s3"])
def backend_name(request) -> str:
    return request.param


@pytest.fixture
def open_run(backend_name, tmp_path, request):
    """A factory opening the same run folder on the parametrised backend: open_run(**spec_fields)."""
    if backend_name == "s3":
        server = request.getfixturevalue("s3_env")
        bucket = server.new_bucket()

        def make(**extra) -> RunStorage:
            return open_run_storage(s3_spec(server, bucket, **extra), "team-a", "run-1", options=SMALL_PARTS)
    else:

        def make(**extra) -> RunStorage:
            return open_run_storage(StorageSpec(uri=str(tmp_path / "store"), **extra), "team-a", "run-1")

    return make


@pytest.fixture
def run(open_run) -> RunStorage:
    return open_run()


def write_checkpoint(folder: Path, seed: int, sizes: dict[str, int]) -> Path:
    """A checkpoint-like folder: files of the given sizes with content that depends on `seed`."""
    folder.mkdir(parents=True, exist_ok=True)
    for rel, size in sizes.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        block = (f"{seed}:{rel}:".encode() * 64)[:4096]
        with open(path, "wb") as f:
            full, rest = divmod(size, len(block))
            for _ in range(full):
                f.write(block)
            f.write(block[:rest])
    return folder


SMALL_CHECKPOINT = {"model.safetensors": 300_000, "optimizer.pt": 120_000, "trainer_state.json": 500, "rng/state_0.pth": 64}


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class MotoS3:
    """moto's S3 server in this process: a second S3 implementation (no SigV4 checks), for what must
    hold on every store (the conditional PUT of the attempt claim)."""

    region = "us-east-1"

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"MotoS3({self.endpoint!r})"

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region, aws_access_key_id="testing",
                            aws_secret_access_key="testing", config=Config(s3={"addressing_style": "path"}))

    def new_bucket(self, prefix: str = "test") -> str:
        import uuid

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield MotoS3(f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def moto_env(moto_server, monkeypatch) -> MotoS3:
    """moto's credentials in the standard AWS environment variables, for one test."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": moto_server.region, "AWS_DEFAULT_REGION": moto_server.region}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return moto_server


@pytest.fixture(autouse=True)
def _no_instance_metadata(monkeypatch):
    # Without credentials boto3 would probe the EC2 metadata service and wait for its timeouts.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield
