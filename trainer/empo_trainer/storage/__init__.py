"""Checkpoints, metrics and reports of a run, in a local folder or S3-compatible storage.

    from empo_trainer.storage import open_run_storage
    run = open_run_storage(spec.storage, namespace, name)
    run.append_metrics({"step": 1, "reward/mean": 0.4})
    run.checkpoints.commit(50, Path("ckpt"))           # upload, manifest, then LATEST
    ref = run.checkpoints.latest()                     # None, or a verified CheckpointRef
    run.checkpoints.download(ref, Path("cache/step"))  # parallel, sha256-checked, reuses cache

The commit protocol is described in `checkpoints`, the S3 metrics strategy in `run_storage`; the
two backends in `local_backend` and `s3_backend`, their shared interface in `backends`.
"""

from .backends import LocalBackend, S3Backend, S3Options
from .checkpoints import CheckpointRef, CheckpointStore
from .errors import (
    BucketNotFoundError,
    CheckpointVerificationError,
    InvalidCredentialsError,
    InvalidStorageURIError,
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageError,
    StorageUnavailableError,
    SupersededError,
    WrongRegionError,
)
from .run_storage import RunStorage, open_run_root, open_run_storage, run_root

__all__ = [
    "open_run_storage", "open_run_root", "run_root", "RunStorage", "CheckpointStore", "CheckpointRef", "S3Options", "LocalBackend", "S3Backend",
    "StorageError", "InvalidCredentialsError", "BucketNotFoundError", "WrongRegionError", "PermissionDeniedError",
    "StorageUnavailableError", "SupersededError", "ObjectNotFoundError", "CheckpointVerificationError", "InvalidStorageURIError",
]
