"""The two places a run can live: a local folder and an S3 bucket. Thin I/O, same interface.

Keys are relative to the run root ('checkpoints/step-000120/model.safetensors'). Every write is
atomic for readers: the local backend writes a temporary file and os.replace()s it; an S3 PUT (or
a completed multipart upload) becomes visible whole or not at all.

`create_bytes` is the one exclusive write (the attempt claim): it creates a key only if no object
has that name, atomically against any number of concurrent writers, with os.link() (which fails if
the name exists) locally and a conditional PUT (If-None-Match: *, answered 412 when the key
exists) on S3. SeaweedFS, moto and AWS S3 honour it (tests/integration/trainer/storage/test_claim_race.py); a store
that ignores the header is detected at the first claim and warned about.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from .errors import ObjectNotFoundError, StorageError, classify_s3_error
from .layout import StorageLocation
from .outage import OutageRetry, default_window_s

log = logging.getLogger("empo_trainer.storage")
_TMP_PREFIX = ".empo-tmp-"
MiB = 1024 * 1024


@dataclass(frozen=True)
class S3Options:
    """Client tuning. Retries use botocore's own retry modes (backoff with jitter on throttling,
    5xx and connection errors), extended to `outage_window_s` seconds per request for outages
    (outage.py); transfers use boto3's transfer manager (multipart, parallel)."""

    retry_mode: str = "standard"  # or "adaptive" (adds client-side rate limiting)
    max_attempts: int = 8  # tries per request within botocore's own backoff, the first included
    # how long a request keeps retrying an unavailable store before the run fails (0: max_attempts only);
    # default: EMPO_STORAGE_OUTAGE_SECONDS, else 120
    outage_window_s: float = field(default_factory=default_window_s)
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    multipart_threshold: int = 16 * MiB
    multipart_chunksize: int = 16 * MiB
    max_concurrency: int = 16


class Backend(Protocol):
    root_uri: str

    def uri_of(self, key: str) -> str: ...
    def check(self) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def create_bytes(self, key: str, data: bytes) -> bool: ...
    def get_bytes(self, key: str) -> bytes: ...
    def append_bytes(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> dict[str, int]: ...
    def delete(self, keys: list[str]) -> None: ...
    def clean_leftovers(self) -> tuple[int, int]: ...
    def upload_files(self, pairs: list[tuple[str, Path]]) -> None: ...
    def download_files(self, pairs: list[tuple[str, Path]]) -> None: ...


def redact_url(url: str | None) -> str | None:
    """An endpoint URL without any user:password@ part, for messages and reprs."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return parts._replace(netloc=f"***@{host}").geturl()
    return url


def _condition_failed(exc: BaseException) -> bool:
    """A conditional write refused: 412 PreconditionFailed, or 409 ConditionalRequestConflict."""
    response = getattr(exc, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code", ""))
    status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412


# --------------------------------------------------------------------------------------------
# local folder
# --------------------------------------------------------------------------------------------


class LocalBackend:
    def __init__(self, root: Path, max_concurrency: int = 8):
        self.root = Path(root).resolve()
        self.root_uri = str(self.root)
        self.max_concurrency = max_concurrency

    def __repr__(self) -> str:
        return f"LocalBackend({self.root_uri!r})"

    def _path(self, key: str) -> Path:
        return self.root / key

    def uri_of(self, key: str) -> str:
        return str(self._path(key))

    def check(self) -> None:
        """The run folder exists (created) and is writable, or a StorageError saying why not."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the run folder {self.root_uri}: {exc.strerror or exc} "
                               "(is a parent a file? check storage.uri or --output)", self.root_uri) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"the run folder {self.root_uri} is not writable by this user; "
                               "choose another storage.uri or --output", self.root_uri)

    def _atomic_write(self, dest: Path, write) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())  # data on disk before the name points at it
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(self._path(key), lambda f: f.write(data))

    def create_bytes(self, key: str, data: bytes) -> bool:
        """Write `key` only if it does not exist: True if this call created it, False if it existed.
        The data is written and synced under a temporary name first, then hard-linked to `key`:
        link() fails when the name exists, so of any number of concurrent callers exactly one wins,
        and readers never see the file half written."""
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, dest)
                return True
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
        finally:
            Path(tmp).unlink(missing_ok=True)
        return self._create_exclusive(dest, data)  # a file system without hard links

    @staticmethod
    def _create_exclusive(dest: Path, data: bytes) -> bool:
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFoundError(f"read {self.uri_of(key)}: no such file", self.uri_of(key)) from None

    def append_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # One write() of a whole record on an O_APPEND file: readers never see half a line.
        with open(path, "ab") as f:
            f.write(data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> dict[str, int]:
        base = self._path(prefix) if prefix.endswith("/") or not prefix else self._path(prefix).parent
        if not base.is_dir():
            return {}
        out = {}
        for p in base.rglob("*"):
            if p.is_file() and not p.name.startswith(_TMP_PREFIX):
                rel = p.relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    out[rel] = p.stat().st_size
        return out

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        # Drop folders the deletes emptied, up to the run root.
        for parent in sorted({self._path(k).parent for k in keys}, key=lambda p: len(p.parts), reverse=True):
            while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    def clean_leftovers(self) -> tuple[int, int]:
        """Remove the temporary files of writes that never finished (a writer killed mid-write):
        (files removed, bytes freed). Call it only as the run's one writer (after claim_attempt)."""
        removed = freed = 0
        if self.root.is_dir():
            for p in self.root.rglob(f"{_TMP_PREFIX}*"):
                try:
                    size = p.stat().st_size
                    p.unlink()
                except OSError:
                    continue
                removed, freed = removed + 1, freed + size
        return removed, freed

    def upload_files(self, pairs: list[tuple[str, Path]]) -> None:
        def copy(pair: tuple[str, Path]) -> None:
            key, src = pair
            with open(src, "rb") as fin:
                self._atomic_write(self._path(key), lambda fout: shutil.copyfileobj(fin, fout, 8 * MiB))

        with ThreadPoolExecutor(self.max_concurrency) as pool:
            list(pool.map(copy, pairs))

    def download_files(self, pairs: list[tuple[str, Path]]) -> None:
        def copy(pair: tuple[str, Path]) -> None:
            key, dest = pair
            src = self._path(key)
            if not src.is_file():
                raise ObjectNotFoundError(f"read {src}: no such file", str(src))
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)

        with ThreadPoolExecutor(self.max_concurrency) as pool:
            list(pool.map(copy, pairs))


# --------------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------------


class S3Backend:
    """An S3 prefix. Credentials come only from boto3's standard chain (AWS_* environment, AWS_PROFILE,
    shared files, container or instance roles); nothing here stores or prints them."""

    def __init__(self, location: StorageLocation, endpoint: str | None, region: str | None, options: S3Options):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = location.bucket
        self.prefix = location.prefix
        self.root_uri = location.uri
        self.endpoint = endpoint
        self.options = options
        session = boto3.Session()
        region = region or session.region_name or ("us-east-1" if endpoint else None)
        self.region = region
        config = Config(
            region_name=region,
            # S3-compatible stores (SeaweedFS, MinIO, Ceph) serve buckets as paths, not subdomains.
            s3={"addressing_style": "path" if endpoint else "auto"},
            # total_max_attempts counts the first try; botocore's "max_attempts" would count retries only.
            retries={"mode": options.retry_mode, "total_max_attempts": options.max_attempts},
            connect_timeout=options.connect_timeout_s,
            read_timeout=options.read_timeout_s,
            max_pool_connections=max(10, options.max_concurrency + 4),
        )
        self.client = session.client("s3", endpoint_url=endpoint, config=config)
        self.outage = OutageRetry(options.outage_window_s, redact_url(endpoint) or "(AWS)")
        if options.outage_window_s > 0:
            self.outage.register(self.client)
        self.transfer_config = TransferConfig(
            multipart_threshold=options.multipart_threshold,
            multipart_chunksize=options.multipart_chunksize,
            max_concurrency=options.max_concurrency,
            use_threads=True,
        )
        self._appended: dict[str, bytes] = {}
        self._conditional_checked = False

    def __repr__(self) -> str:
        return f"S3Backend({self.root_uri!r}, endpoint={redact_url(self.endpoint)!r}, region={self.region!r})"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_of(self, key: str) -> str:
        return f"{self.root_uri}/{key}"

    def _fail(self, exc: BaseException, uri: str, operation: str) -> StorageError:
        return classify_s3_error(exc, uri, operation, outage_window_s=self.options.outage_window_s,
                                 endpoint=redact_url(self.endpoint))

    def check(self) -> None:
        """Fail early, with the cause, if the bucket is missing or the credentials do not work."""
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(""), MaxKeys=1)
        except Exception as e:
            raise self._fail(e, self.root_uri, "open") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as e:
            raise self._fail(e, self.uri_of(key), "write") from None
        if key in self._appended:  # a rewrite (metrics trimmed on resume): appends continue from it
            self._appended[key] = data

    def _put_if_absent(self, key: str, data: bytes) -> bool:
        """One conditional PUT: True if it created `key`, False if the store refused it (412: the key
        exists; 409: a concurrent conditional write to it won)."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except Exception as e:
            if _condition_failed(e):
                return False
            raise self._fail(e, self.uri_of(key), "write") from None

    def create_bytes(self, key: str, data: bytes) -> bool:
        """Write `key` only if it does not exist (If-None-Match: *): True if this call created it,
        False if it existed. Of any number of concurrent callers exactly one gets True."""
        if not self._put_if_absent(key, data):
            # A retried PUT whose first try landed (the answer was lost) is refused too: the object
            # is ours if it holds our bytes (callers make them unique).
            try:
                return self.get_bytes(key) == data
            except ObjectNotFoundError:
                return False
        if not self._conditional_checked:
            self._conditional_checked = True
            if self._put_if_absent(key, data):  # the same PUT again must be refused
                log.warning(
                    "the S3 store at %s ignores conditional writes (If-None-Match): two attempts of a run that "
                    "start at the same instant could both claim attempt %s. Use a store that supports them "
                    "(AWS S3, SeaweedFS, recent MinIO and Ceph)", redact_url(self.endpoint) or "AWS", key)
        return True

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as e:
            raise self._fail(e, self.uri_of(key), "read") from None

    def append_bytes(self, key: str, data: bytes) -> None:
        # S3 has no append: read the object once per process, then rewrite it whole on each append
        # (one PUT, atomic for readers). Cost grows with the file; fine for one line per step.
        if key not in self._appended:
            try:
                self._appended[key] = self.get_bytes(key)
            except ObjectNotFoundError:
                self._appended[key] = b""
        body = self._appended[key] + data
        self.put_bytes(key, body)
        self._appended[key] = body

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as e:
            err = self._fail(e, self.uri_of(key), "read")
            if isinstance(err, ObjectNotFoundError):
                return False
            raise err from None

    def list(self, prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        strip = len(self._key(""))
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for obj in page.get("Contents", []):
                    out[obj["Key"][strip:]] = obj["Size"]
        except Exception as e:
            raise self._fail(e, self.uri_of(prefix), "list") from None
        return out

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = keys[i:i + 1000]
            try:
                resp = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True}
                )
            except Exception as e:
                raise self._fail(e, self.uri_of(batch[0]), "delete") from None
            if resp.get("Errors"):
                first = resp["Errors"][0]
                raise StorageError(
                    f"delete {self.root_uri}/{first['Key'][len(self._key('')):]}: {first.get('Code')} "
                    f"({len(resp['Errors'])} keys not deleted)",
                    self.root_uri,
                )

    def clean_leftovers(self) -> tuple[int, int]:
        """Abort the multipart uploads under the run that never completed (a writer killed, or an
        abort that failed during an outage): they hold parts the store keeps, and bills for, until
        aborted. Returns (uploads aborted, bytes in their parts). Call it only as the run's one
        writer (after claim_attempt): an older attempt still uploading is superseded anyway."""
        aborted = freed = 0
        try:
            pages = list(self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._key("")))
        except Exception as e:
            raise self._fail(e, self.root_uri, "list uploads of") from None
        for upload in (u for page in pages for u in page.get("Uploads", [])):
            key, upload_id = upload["Key"], upload["UploadId"]
            try:
                for parts in self.client.get_paginator("list_parts").paginate(
                        Bucket=self.bucket, Key=key, UploadId=upload_id):
                    freed += sum(p.get("Size", 0) for p in parts.get("Parts", []))
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                aborted += 1
            except Exception as e:
                err = self._fail(e, f"s3://{self.bucket}/{key}", "abort upload of")
                if not isinstance(err, ObjectNotFoundError):  # NoSuchUpload: it ended meanwhile
                    raise err from None
        return aborted, freed

    def _transfer(self, pairs: list[tuple[str, Path]], upload: bool) -> None:
        from boto3.s3.transfer import create_transfer_manager

        operation = "upload" if upload else "download"
        # One transfer manager for all files: parts of every file share one pool of threads. Leaving
        # the block on an error cancels the other transfers (TransferManager.shutdown(cancel=True)
        # is broken in s3transfer 0.19: it passes its arguments in the wrong order).
        with create_transfer_manager(self.client, self.transfer_config) as manager:
            futures = []
            for key, path in pairs:
                if upload:
                    futures.append((key, manager.upload(str(path), self.bucket, self._key(key))))
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    futures.append((key, manager.download(self.bucket, self._key(key), str(path))))
            for key, future in futures:
                try:
                    future.result()
                except Exception as e:
                    raise self._fail(e, self.uri_of(key), operation) from None

    def upload_files(self, pairs: list[tuple[str, Path]]) -> None:
        self._transfer(pairs, upload=True)

    def download_files(self, pairs: list[tuple[str, Path]]) -> None:
        self._transfer(pairs, upload=False)
