"""A run in an S3 bucket: boto3 with botocore's retries extended over outages (outage.py),
multipart transfers, and the attempt claim as a conditional PUT (see backends.py for the
interface both backends share).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ObjectNotFoundError, StorageError, classify_s3_error
from .layout import StorageLocation
from .outage import OutageRetry, default_window_s

log = logging.getLogger("empo_trainer.storage")
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
